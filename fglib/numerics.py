"""The directional derivative D_v f(theta) three ways, against the exact forward-mode value.

    forward difference   (f(theta + h v) - f(theta)) / h          error ~ h (truncation) + eps/h (round-off)
    central difference   (f(theta + h v) - f(theta - h v)) / 2h   error ~ h^2 + eps/h
    complex step         Im f(theta + i h v) / h                  error ~ h^2, no cancellation

(Martins et al. 2003 for the complex step; f must be real-analytic and written
with operations that accept complex numbers.)
"""
import pandas as pd
import torch

from .forward_grad import jvp


def finite_difference(f, theta, v, h, scheme="forward"):
    """D_v f(theta) by a forward difference, (f(theta + h v) - f(theta)) / h, or a central one,
    (f(theta + h v) - f(theta - h v)) / 2h (scheme='central')."""
    if scheme == "forward":
        return (f(theta + h * v) - f(theta)) / h
    if scheme == "central":
        return (f(theta + h * v) - f(theta - h * v)) / (2 * h)
    raise ValueError(f"unknown scheme {scheme!r}; choose 'forward' or 'central'")


def complex_step(f, theta, v, h):
    """D_v f(theta) = Im f(theta + i h v) / h, in complex128: no subtraction, so h can be tiny
    (f must be real-analytic and accept complex numbers)."""
    z = theta.to(torch.complex128) + 1j * h * v.to(torch.complex128)
    return f(z).imag / h


def derivative_errors(f, theta, v, hs):
    """Relative error of each approximation against the exact JVP, for each step h."""
    _, exact = jvp(f, theta, v)
    rows = []
    for h in hs:
        approx = {"forward difference": finite_difference(f, theta, v, h, "forward"),
                  "central difference": finite_difference(f, theta, v, h, "central"),
                  "complex step": complex_step(f, theta, v, h)}
        for name, value in approx.items():
            rows.append({"h": h, "method": name,
                         "relative error": float(abs(value - exact) / abs(exact))})
    return pd.DataFrame(rows)


def gradient_by_forward_mode(f, theta):
    """The full gradient from n forward-mode passes with one-hot directions e_i."""
    eye = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
    return torch.stack([jvp(f, theta, e.reshape(theta.shape))[1] for e in eye]).reshape(theta.shape)
