"""Finite differences along v (SPSA, MeZO): convergence to the exact d, exactness on a quadratic,
unbiasedness, the in-place scheme's exact restore and its memory, and clear errors."""
import math

import pytest
import torch
from torch import nn
import torch.nn.functional as F

import fglib
from fglib import stats
from fglib.zeroth_order import InPlaceFiniteDifference, finite_difference

A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, -0.5], [0.0, -0.5, 1.0]], dtype=torch.float64)
B = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
START = [0.3, -0.7, 1.1]


def quadratic(theta):
    return 0.5 * theta @ (A @ theta) + B @ theta


def quartic(theta):
    return (theta ** 4).sum()


def batch(model, dtype=torch.float64, n=32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 28, 28, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def small_mlp():
    return fglib.build_model("deep", seed=0, depth=3, width=64).double()


def directions(model, seed=1):
    return fglib.sample_directions(list(model.parameters()), "normal", fglib.make_generator(seed))


@pytest.mark.parametrize("scheme,order", [("forward", 1), ("central", 2)])
def test_difference_converges_to_the_exact_derivative_at_its_order(scheme, order):
    """float64, logistic regression on MNIST-shaped data (smooth: in a ReLU network a kink
    crossed between theta - hv and theta + hv breaks the order until h is small enough): the
    error against forward mode's exact d falls like h^order."""
    model = fglib.build_model("logreg", seed=0).double()
    x, y = batch(model)
    v = directions(model)
    _, d = fglib.module_jvp(model, F.cross_entropy, x, y, v)
    errors = [abs(float(finite_difference(model, F.cross_entropy, x, y, v, h, scheme)[1] - d))
              for h in (1e-4, 1e-5)]
    assert errors[1] < 1e-3 * abs(float(d))
    assert 10 ** (order - 0.3) < errors[0] / errors[1] < 10 ** (order + 0.3)


def test_central_difference_is_exact_for_a_quadratic_at_any_h():
    model = fglib.PointModel(quadratic, START)
    v = [torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)]
    exact = float((A @ model.theta.detach() + B) @ v[0])
    for h in (1e-3, 0.5, 10.0):
        _, d = finite_difference(model, fglib.value_loss, None, None, v, h, "central")
        assert float(d) == pytest.approx(exact, rel=1e-12)
    _, d = finite_difference(model, fglib.value_loss, None, None, v, 0.5, "forward")
    assert abs(float(d) - exact) > 0.1  # the one-sided difference is not: it carries (h/2) v'Av


def gradient_samples(f, h, n=20_000):
    model = fglib.PointModel(f, START)
    gen = fglib.make_generator(5)
    out = []
    for _ in range(n):
        v = torch.randn(3, dtype=torch.float64, generator=gen)
        out.append(finite_difference(model, fglib.value_loss, None, None, [v], h, "central")[1] * v)
    theta = model.theta.detach().clone().requires_grad_(True)
    return torch.stack(out), torch.autograd.grad(f(theta), theta)[0]


def test_central_difference_gradient_is_unbiased_on_a_quadratic():
    samples, grad = gradient_samples(quadratic, 1e-4)
    assert stats.z_scores(samples, grad).abs().max() < 4.5


def test_the_same_test_detects_the_bias_of_a_large_h_on_a_quartic():
    """Control: for sum(theta^4) the central difference carries (h^2/6) D^3f[v,v,v], whose
    mean along v is 12 h^2 theta: the test must reject it at h = 1."""
    samples, grad = gradient_samples(quartic, 1.0)
    assert stats.z_scores(samples, grad).abs().max() > 20


def test_same_seed_gives_forward_gradient_and_finite_difference_the_same_directions():
    model = fglib.build_model("logreg", seed=0).double()
    x, y = batch(model)
    fg = fglib.make_method("fg", model, F.cross_entropy, 1e-3, seed=7)
    fd = fglib.make_method("fd", model, F.cross_entropy, 1e-3, seed=7, h=1e-5)
    fg.fill_grad(x, y)
    g_fg = [p.grad.clone() for p in fg.params]
    fd.fill_grad(x, y)
    assert fg.last_seeds == fd.last_seeds
    for a, b in zip(g_fg, fd.params):
        torch.testing.assert_close(b.grad, a, rtol=1e-5, atol=1e-9)


def naive_mezo_perturbation(model, h, seed):
    """MeZO's scheme: theta += h v; theta -= 2 h v; theta += h v, in place."""
    params = list(model.parameters())
    with torch.no_grad():
        for scale in (h, -2 * h, h):
            for p, v in zip(params, directions(model, seed)):
                p.add_(v, alpha=scale)


def test_in_place_scheme_leaves_the_weights_bit_identical_at_learning_rate_zero():
    model = fglib.build_model("mlp", seed=0)
    x, y = batch(model, torch.float32)
    before = [p.detach().clone() for p in model.parameters()]
    method = InPlaceFiniteDifference(model, F.cross_entropy, 1e-3, h=1e-2, seed=0)
    method.optimizer.param_groups[0]["lr"] = 0.0
    for _ in range(3):
        method.step(x, y)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    # control: adding and subtracting the perturbation in place does change some weights
    naive_mezo_perturbation(model, 1e-2, 1)
    assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_in_place_step_is_the_finite_difference_along_its_regenerated_direction():
    model = small_mlp()
    x, y = batch(model)
    method = InPlaceFiniteDifference(model, F.cross_entropy, 0.1, h=1e-5, seed=3, decay=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    loss = method.step(x, y)
    seed = method.last_seeds[0]
    v = [method.direction_of(seed, p) for p in method.params]
    copy = small_mlp()
    _, d = finite_difference(copy, F.cross_entropy, x, y, v, 1e-5, "central")
    for b, p, vi in zip(before, model.parameters(), v):
        torch.testing.assert_close(p.detach(), b - 0.1 * d * vi, rtol=1e-10, atol=1e-12)
    assert method.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * math.exp(-0.5))  # the decay applies
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(F.cross_entropy(copy(x), y)), rel=1e-6)


def nested(model):
    """The same network with its hidden layers inside a nested nn.Sequential."""
    return nn.Sequential(model[0], nn.Sequential(*model[1:-1]), model[-1])


def test_in_place_step_perturbs_the_parameters_of_nested_modules_too():
    """A nested Sequential's layers are perturbed as well as updated: the step is
    theta - lr d_h v with d_h the finite difference along the whole v, and equals the flat model's
    step bit for bit (a scheme that updated them without perturbing them failed both)."""
    x, y = batch(small_mlp())
    flat, inner = small_mlp(), nested(small_mlp())
    before = [p.detach().clone() for p in inner.parameters()]
    methods = [InPlaceFiniteDifference(model, F.cross_entropy, 0.1, h=1e-5, seed=3) for model in (flat, inner)]
    for method in methods:
        method.step(x, y)
    assert all(torch.equal(a, b) for a, b in zip(flat.parameters(), inner.parameters()))
    v = [methods[1].direction_of(methods[1].last_seeds[0], p) for p in methods[1].params]
    _, d = finite_difference(nested(small_mlp()), F.cross_entropy, x, y, v, 1e-5, "central")
    for b, p, vi in zip(before, inner.parameters(), v):
        torch.testing.assert_close(p.detach(), b - 0.1 * d * vi, rtol=1e-10, atol=1e-12)


def test_in_place_scheme_needs_no_parameter_sized_buffer():
    """Measured: beyond inference, one step holds about one layer's perturbed weight, a
    quarter of the parameters of this 4-layer network; the out-of-place difference holds at
    least a full copy (control)."""
    model = fglib.build_model("deep", seed=0, depth=4, width=512)
    x, y = batch(model, torch.float32, 64)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    largest = max(p.numel() * p.element_size() for p in model.parameters())
    inference = fglib.peak_tensor_bytes(fglib.measure.base_call(model, F.cross_entropy, x, y))
    in_place = InPlaceFiniteDifference(model, F.cross_entropy, 1e-6, h=1e-2)
    extra = fglib.peak_tensor_bytes(lambda: in_place.step(x, y)) - inference
    assert extra <= largest * 1.05 and extra < params / 2
    out_of_place = fglib.make_method("fd", model, F.cross_entropy, 1e-6, h=1e-2)
    out_of_place.step(x, y)
    assert fglib.peak_tensor_bytes(lambda: out_of_place.step(x, y)) - inference >= params


def test_peak_tensor_bytes_counts_what_is_alive_at_once():
    def work():
        a = torch.empty(10_000_000, dtype=torch.uint8)
        del a
        b = torch.empty(20_000_000, dtype=torch.uint8)
        c = torch.empty(5_000_000, dtype=torch.uint8)
        b.add_(1)  # in place: no new memory
        del b, c
    assert fglib.peak_tensor_bytes(work) == 25_000_000


@pytest.mark.parametrize("h", [0.0, -1e-3, float("inf"), float("nan")])
def test_bad_h_is_refused_with_its_name(h):
    model = small_mlp()
    with pytest.raises(ValueError, match="h must be a positive finite number"):
        fglib.make_method("fd", model, F.cross_entropy, 1e-3, h=h)
    with pytest.raises(ValueError, match="h must be"):
        InPlaceFiniteDifference(model, F.cross_entropy, 1e-3, h=h)


def test_in_place_scheme_refuses_an_optimiser_with_state():
    with pytest.raises(ValueError, match="optimizer must be 'sgd'"):
        InPlaceFiniteDifference(small_mlp(), F.cross_entropy, 1e-3, optimizer="adam")


def test_bad_scheme_is_refused():
    with pytest.raises(ValueError, match="scheme"):
        fglib.make_method("fd", small_mlp(), F.cross_entropy, 1e-3, scheme="backward")


def test_cost_table_takes_the_median_of_quiet_rounds_only():
    """The zeroth-order chapter's costs derive from every saved repeat: disturbed rounds (other load)
    are left out, so backprop's slow steps there move nothing; counted as quiet (control), they would."""
    import pandas as pd
    from fglib.book.grading import cost_table
    slow = lambda r, n: 100 if (r < 2 and n == "backprop") else 1
    rounds = pd.DataFrame([{"round": r, "name": n, "seconds": s * slow(r, n), "other load": 0.0,
                            "disturbed": r < 2, "model": "mlp"}
                           for r in range(4) for n, s in (("backprop", 0.01), ("forward gradient", 0.02))])
    memory = pd.DataFrame([{"model": "mlp", "name": n, "peak memory (MiB)": 1.0, "parameters (MiB)": 7.0}
                           for n in ("backprop", "forward gradient")])
    ratio = lambda r: cost_table(r, memory).set_index("method").loc["forward gradient", "S / S_backprop"]
    assert ratio(rounds) == pytest.approx(2.0)
    assert ratio(rounds.assign(disturbed=False)) < 0.1


def test_iterations_to_a_target_are_read_between_evaluations_not_on_their_grid():
    """The reviewer's point: finite differences needing '1.00 times' forward gradients' iterations
    sat on the evaluation grid. Interpolated between evaluations, a run crossing the level 0.9 early
    reads 714 and one crossing late 1,167; on the grid (the control) they read 1,000 and 2,000,
    the evaluations after the crossing."""
    import pandas as pd
    from fglib.book.sweep import iterations_to_targets
    rows = []
    for method, at_1000 in (("early", 0.86), ("late", 0.98)):   # loss 1.0 at 0, falling to at_1000, then 0.5
        for i, loss in ((0, 1.0), (1000, at_1000), (2000, 0.5)):
            rows.append({"method": method, "lr": 0.0, "run": 0, "split": "validation", "iteration": i, "loss": loss})
    curves = pd.DataFrame(rows)
    exact = iterations_to_targets(curves, {"loss": [0.9]}, interpolate=True).set_index("method")["iterations"]
    assert exact["early"] == pytest.approx(1000 * 0.1 / 0.14) and exact["late"] == pytest.approx(1000 + 1000 * 0.08 / 0.48)
    grid = iterations_to_targets(curves, {"loss": [0.9]}).set_index("method")["iterations"]
    assert grid["early"] == 1000 and grid["late"] == 2000
    never = iterations_to_targets(curves, {"loss": [0.1]}, interpolate=True)
    assert never["iterations"].isna().all()
