"""Theorem 1 and the variance formulas, as statistical tests at a fixed seed."""
import math

import pytest
import torch

import fglib
from fglib import stats

GRAD = torch.tensor([3.0, -1.0, 0.5, 2.0, -0.25, 1.5], dtype=torch.float64)
N = 200_000


def beale_gradient():
    theta = torch.tensor([1.5, -0.1], dtype=torch.float64, requires_grad=True)
    return torch.autograd.grad(fglib.beale(theta), theta)[0]


@pytest.mark.parametrize("kind", fglib.DIRECTIONS)
def test_mean_of_forward_gradients_is_the_gradient(kind):
    z = stats.z_scores(stats.forward_gradient_samples(GRAD, N, kind, fglib.make_generator(0)), GRAD)
    assert z.abs().max() < 4.5  # every component within 4.5 standard errors


def test_wrong_variance_is_detected_as_bias():
    """The same test rejects directions with variance 2: their mean is 2 grad f."""
    samples = stats.forward_gradient_samples(GRAD, N, "normal", fglib.make_generator(0), scale=math.sqrt(2))
    assert stats.z_scores(samples, GRAD).abs().max() > 20


def test_forward_ad_samples_on_beale_are_unbiased():
    """Real forward-mode passes on the paper's Figure 1 point, not the closed form."""
    grad, gen = beale_gradient(), fglib.make_generator(3)
    theta = torch.tensor([1.5, -0.1], dtype=torch.float64)
    samples = torch.stack([fglib.forward_gradient(fglib.beale, theta, generator=gen).g for _ in range(20_000)])
    assert stats.z_scores(samples, grad).abs().max() < 4.5


@pytest.mark.parametrize("kind,n", [("normal", 10), ("normal", 1000), ("rademacher", 10), ("rademacher", 1000)])
def test_second_moment_matches_formula(kind, n):
    grad = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    mean, se = stats.second_moment(grad, 100_000, kind, fglib.make_generator(1))
    expected = stats.expected_second_moment(grad, kind)
    assert abs(mean - expected) < 4.5 * se
    if n <= 10:  # there the two formulas differ by 20%, and this sample size tells them apart
        other = stats.expected_second_moment(grad, "rademacher" if kind == "normal" else "normal")
        assert abs(mean - other) > 4.5 * se


def test_error_of_the_mean_falls_like_one_over_sqrt_k():
    rows = stats.mean_error(GRAD, [10, 1000], repeats=200, generator=fglib.make_generator(2))
    err = {k: sum(e for kk, _, e in rows if kk == k) / 200 for k in (10, 1000)}
    slope = math.log(err[1000] / err[10]) / math.log(100)
    assert -0.6 < slope < -0.4


def test_cosine_shrinks_like_one_over_sqrt_n():
    for n in (100, 10_000):
        grad = torch.ones(n, dtype=torch.float64)
        mean_cos = float(stats.cosines(grad, 2000, generator=fglib.make_generator(4)).mean())
        assert mean_cos == pytest.approx(math.sqrt(2 / (math.pi * n)), rel=0.1)


@pytest.mark.parametrize("case", sorted(stats.BROKEN_DIRECTIONS))
def test_broken_directions_are_biased_as_predicted(case):
    samples, expected = stats.broken_samples(GRAD, N, case, fglib.make_generator(6))
    assert stats.z_scores(samples, expected).abs().max() < 4.5  # mean is E[vv^T] grad ...
    assert stats.z_scores(samples, GRAD).abs().max() > 10       # ... not grad


def test_sphere_directions_have_the_rademacher_second_moment():
    """v uniform on the sphere of radius sqrt(n): E||g||^2 = n ||grad f||^2, not (n + 2)."""
    grad = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    mean, se = stats.second_moment(grad, 100_000, "sphere", fglib.make_generator(1))
    assert abs(mean - stats.expected_second_moment(grad, "sphere")) < 4.5 * se
    assert abs(mean - stats.expected_second_moment(grad, "normal")) > 4.5 * se


def test_orthogonal_directions_are_orthogonal_of_length_sqrt_n_and_exact_when_k_is_n():
    n = GRAD.numel()
    V = fglib.directions.orthogonal_rows(n, n, generator=fglib.make_generator(6))
    torch.testing.assert_close(V @ V.T, n * torch.eye(n, dtype=torch.float64))
    g = ((V @ GRAD)[:, None] * V).mean(0)
    torch.testing.assert_close(g, GRAD)  # K = n orthogonal directions recover the gradient exactly


def test_orthogonal_directions_cut_the_error_of_the_mean_below_independent_ones():
    """K = 3 of n = 6: the mean of K forward gradients is unbiased either way. Its squared error
    is (n + 1)/K ||grad f||^2 for independent normal directions and n/K - 1 times ||grad f||^2
    for an orthogonal block (the projection onto a random K-dimensional subspace, scaled by
    n/K): measured against both formulas."""
    gen, blocks, k = fglib.make_generator(7), 20_000, 3
    draws = {"normal": fglib.directions.direction_rows(blocks * k, GRAD.numel(), "normal", generator=gen),
             "orthogonal": fglib.directions.orthogonal_rows(k, GRAD.numel(), generator=gen, blocks=blocks)}
    err = {}
    for kind, V in draws.items():
        V = V.view(blocks, k, -1)
        g = ((V @ GRAD)[..., None] * V).mean(1)          # the mean of each block's K forward gradients
        err[kind] = float((g - GRAD).pow(2).sum(1).mean())
    n, norm2 = GRAD.numel(), float(GRAD.pow(2).sum())
    assert err["normal"] == pytest.approx((n + 1) / k * norm2, rel=0.05)
    assert err["orthogonal"] == pytest.approx((n / k - 1) * norm2, rel=0.05)


@pytest.mark.parametrize("kind,k", [("normal", 1), ("rademacher", 1), ("orthogonal", 4)])
def test_error_on_a_network_matches_the_formula_and_splits_by_layer_size(kind, k):
    """Logistic regression in float64 at its initial weights: the mean squared error of the
    forward gradient against backprop's gradient is the formula's, within 4.5 standard errors,
    and each parameter tensor carries about its share of the parameters, n_l / n, of it."""
    model = fglib.build_model("logreg", seed=0).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 1, 28, 28, dtype=torch.float64, generator=g), torch.randint(0, 10, (32,), generator=g)
    rows, norm2 = stats.network_errors(model, torch.nn.functional.cross_entropy, x, y, kind, 300, k, seed=2)
    n = fglib.count_parameters(model)
    expected = stats.expected_squared_error(norm2, n, kind, k)
    se = rows["squared error"].std() / math.sqrt(len(rows))
    assert abs(rows["squared error"].mean() - expected) < 4.5 * se
    share = rows["squared error, 1.bias"].mean() / rows["squared error"].mean()
    assert share == pytest.approx(10 / n, rel=0.3)
