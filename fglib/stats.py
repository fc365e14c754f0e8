"""Statistics of the forward gradient g = (grad f . v) v at a point with known gradient.

g depends on f only through grad f, so many samples are drawn at once as
G = (V grad) * V for a matrix V of directions (rows); `forward_gradient`
computes the same d = grad f . v by forward-mode AD, exactly (see the tests).

For independent v_i with zero mean and unit variance, E[g] = grad f (Theorem 1) and

    E ||g||^2 = (n + 2) ||grad f||^2   for v ~ N(0, I)
    E ||g||^2 =  n      ||grad f||^2   for Rademacher v (v_i = +-1), and v uniform on the sphere
                                       of radius sqrt(n)

The cosine between g and grad f is |cos(v, grad f)|, of mean about sqrt(2 / (pi n)).
"""
import math

import pandas as pd
import torch

from . import checks
from .directions import check_direction, direction_rows


def forward_gradient_samples(grad, n_samples, kind="normal", generator=None, scale=1.0):
    """(n_samples, n) forward gradients; `scale` != 1 gives directions of the wrong variance.
    For kind='orthogonal' the n_samples directions are orthogonal to each other."""
    V = direction_rows(n_samples, grad.numel(), check_direction(kind, "kind"), grad.dtype, grad.device,
                       generator) * scale
    return (V @ grad.flatten())[:, None] * V


def z_scores(samples, grad):
    """(sample mean - grad) / standard error, per component: about N(0, 1) when unbiased."""
    n = samples.shape[0]
    return (samples.mean(0) - grad.flatten()) / (samples.std(0) / math.sqrt(n))


def expected_second_moment(grad, kind="normal"):
    """E||g||^2 for g = (grad . v) v with directions of law `kind`, from the true gradient:
    (n + 2) ||grad||^2 for normal v (E v_i^4 = 3); n ||grad||^2 for Rademacher signs, for v
    uniform on the sphere of radius sqrt(n), and for orthogonal directions (each on that sphere)."""
    n, norm2 = grad.numel(), float(grad.pow(2).sum())
    moments = {"normal": (n + 2) * norm2, "rademacher": n * norm2, "sphere": n * norm2, "orthogonal": n * norm2}
    return moments[check_direction(kind, "kind")]


def _direction_chunks(grad, n_samples, kind, generator, chunk):
    """Matrices of directions (rows), n_samples rows in all; `chunk` rows at a time bound memory."""
    chunk = chunk or max(1, min(n_samples, 2 ** 24 // grad.numel()))
    for start in range(0, n_samples, chunk):
        yield direction_rows(min(chunk, n_samples - start), grad.numel(), kind, grad.dtype, grad.device, generator)


def second_moment(grad, n_samples, kind="normal", generator=None, chunk=None):
    """Monte Carlo E||g||^2 and its standard error."""
    g = grad.flatten()
    values = torch.cat([(V @ g) ** 2 * V.pow(2).sum(1)
                        for V in _direction_chunks(grad, n_samples, kind, generator, chunk)])
    return float(values.mean()), float(values.std() / math.sqrt(n_samples))


def cosines(grad, n_samples, kind="normal", generator=None, chunk=None):
    """cos(g, grad f) for n_samples forward gradients."""
    g = grad.flatten()
    return torch.cat([(V @ g).abs() / (V.norm(dim=1) * g.norm())
                      for V in _direction_chunks(grad, n_samples, kind, generator, chunk)])


def mean_error(grad, k_values, repeats, kind="normal", generator=None):
    """||mean of K forward gradients - grad|| for each K, `repeats` times: rows (K, repeat, error)."""
    rows = []
    for k in k_values:
        for r in range(repeats):
            g = forward_gradient_samples(grad, k, kind, generator).mean(0)
            rows.append((k, r, float((g - grad.flatten()).norm())))
    return rows


def expected_squared_error(grad_norm2, n, kind="normal", k=1):
    """E||g_K - grad f||^2 for the mean g_K of K forward gradients, in units of ||grad f||^2 =
    grad_norm2: (n + 1)/K for normal directions, (n - 1)/K for Rademacher and sphere ones, and
    n/K - 1 for K orthogonal directions (a random K-dimensional projection, scaled by n/K)."""
    factor = {"normal": (n + 1) / k, "rademacher": (n - 1) / k, "sphere": (n - 1) / k,
              "orthogonal": n / k - 1}[check_direction(kind, "kind")]
    return factor * grad_norm2


def network_errors(model, loss_fn, x, y, kind="normal", n_samples=100, n_directions=1, seed=0, engine="auto"):
    """The forward gradient of a network's mini-batch loss at its current weights, against
    backprop's exact gradient of the same loss: one row per sample (each the mean of
    `n_directions` forward gradients, as a training step takes it) with the squared error
    ||g - grad f||^2, the cosine between g and grad f, and the squared error of each parameter
    tensor (columns named after them). Also returns ||grad f||^2. The weights do not change."""
    from .methods import Backprop, ForwardGradientDescent
    method = ForwardGradientDescent(model, loss_fn, 1.0, direction=kind, n_directions=n_directions, seed=seed,
                                    engine=engine)
    rows, exact = estimator_errors(method, Backprop(model, loss_fn, 1.0), x, y, n_samples)
    return rows, float(sum(g.pow(2).sum() for g in exact.values()))


def estimator_errors(method, reference, x, y, n_samples=100):
    """Any gradient estimator against an exact one, both fglib methods on the same model (e.g.
    FG-A against backprop, local FG-W against local backprop): one row per sample of the
    method's .grad with its squared error, its cosine with the exact gradient and the squared
    error of each parameter tensor ("squared error, <name>"). Also returns the exact gradient
    {name: tensor}. The weights do not change."""
    if method.model is not reference.model:
        raise ValueError("method and reference must train the same model object")
    named = [(n, p) for n, p in method.model.named_parameters() if p.requires_grad]
    reference.fill_grad(x, y)
    exact = {n: p.grad.detach().clone() for n, p in named}
    norm_exact = math.sqrt(float(sum(g.pow(2).sum() for g in exact.values())))
    rows = []
    for _ in range(checks.count("n_samples", n_samples)):
        method.fill_grad(x, y)
        errors = {n: float((p.grad - exact[n]).pow(2).sum()) for n, p in named}
        dot = float(sum((p.grad * exact[n]).sum() for n, p in named))
        norm = math.sqrt(float(sum(p.grad.pow(2).sum() for _, p in named)))
        rows.append({"squared error": sum(errors.values()), "cosine": dot / (norm * norm_exact),
                     **{f"squared error, {n}": e for n, e in errors.items()}})
    for _, p in named:
        p.grad = None
    return pd.DataFrame(rows), exact


# Directions that break one assumption of Theorem 1 each. All are N(0, 1) draws z
# turned into v; E[g] = E[v v^T] grad f, which equals grad f only when E[v v^T] = I.
def _variance_two(z, rho, generator):
    return z * math.sqrt(2.0)


def _mean_half(z, rho, generator):
    return z + 0.5


def _correlated(z, rho, generator):
    # one draw shared by all components of a direction: Var v_i = 1, Cov(v_i, v_j) = rho
    shared = torch.randn(z.shape[0], 1, dtype=z.dtype, generator=generator)
    return math.sqrt(1 - rho) * z + math.sqrt(rho) * shared


BROKEN_DIRECTIONS = {
    "variance 2": (_variance_two, lambda n, rho: 2 * torch.eye(n)),
    "mean 0.5": (_mean_half, lambda n, rho: torch.eye(n) + 0.25),
    "correlated": (_correlated, lambda n, rho: (1 - rho) * torch.eye(n) + rho),
}


def broken_samples(grad, n_samples, case, generator=None, rho=0.8):
    """Forward gradients with directions that violate Theorem 1, and their expected mean."""
    if case not in BROKEN_DIRECTIONS:
        raise ValueError(f"unknown case {case!r}; choose one of {sorted(BROKEN_DIRECTIONS)}")
    make, second_moment_matrix = BROKEN_DIRECTIONS[case]
    z = torch.randn(n_samples, grad.numel(), dtype=grad.dtype, generator=generator)
    V = make(z, rho, generator)
    expected = second_moment_matrix(grad.numel(), rho).to(grad.dtype) @ grad.flatten()
    return (V @ grad.flatten())[:, None] * V, expected
