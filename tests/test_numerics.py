"""Finite differences against the exact forward-mode derivative, the complex step, n passes."""
import numpy as np
import torch

import fglib
from fglib import numerics

THETA = torch.tensor([1.5, -0.1], dtype=torch.float64)
V = torch.tensor([0.8, -0.6], dtype=torch.float64)


def test_forward_difference_error_falls_then_rises():
    hs = np.logspace(-1, -12, 23)
    df = numerics.derivative_errors(fglib.beale, THETA, V, hs)
    err = df[df.method == "forward difference"].set_index("h")["relative error"]
    best = err.idxmin()
    assert 1e-10 < best < 1e-6          # near sqrt(machine epsilon)
    assert err[hs[0]] > 100 * err[best]  # truncation at large h
    assert err[hs[-1]] > 100 * err[best]  # round-off at small h


def test_complex_step_reaches_machine_precision():
    df = numerics.derivative_errors(fglib.rosenbrock, THETA, V, [1e-8, 1e-20, 1e-100])
    cs = df[df.method == "complex step"]["relative error"]
    assert (cs < 1e-14).all()


def test_n_forward_passes_give_the_gradient():
    theta = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = lambda t: (t.sin() * t.roll(1)).sum() + (t ** 2).sum()
    t = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(t), t)
    torch.testing.assert_close(numerics.gradient_by_forward_mode(f, theta), grad, rtol=1e-12, atol=0)
