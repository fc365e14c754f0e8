"""The directional derivative from forward mode equals grad f . v from backprop."""
import math

import pytest
import torch
import torch.nn.functional as F

import fglib

MODELS = {"logreg": {}, "mlp": {}, "cnn": {}, "deep": {"depth": 3}}


def backprop_grads(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


ENGINES = ["fglib", "forward_ad", "func"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", fglib.directions.ONE_AT_A_TIME)
def test_module_jvp_matches_backprop_float64(name, kind, engine):
    model = fglib.build_model(name, seed=0, dtype=torch.float64, **MODELS[name])
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    v = fglib.sample_directions(list(model.parameters()), kind, fglib.make_generator(1))
    loss, d = fglib.module_jvp(model, F.cross_entropy, x, y, v, engine=engine)
    exact = sum((g * vi).sum() for g, vi in zip(backprop_grads(model, x, y), v))
    assert torch.allclose(loss, F.cross_entropy(model(x), y))
    assert abs(d - exact) <= 1e-10 * abs(exact)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", fglib.FUNCTIONS)
def test_function_jvp_matches_backprop_float64(name, engine):
    tf = fglib.get_function(name)
    theta = torch.tensor([0.7, -0.3], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(tf.f(theta), theta)
    v = torch.tensor([0.6, 1.9], dtype=torch.float64)
    value, d = fglib.jvp(tf.f, theta, v, engine=engine)
    assert value == tf.f(theta).item()
    assert abs(d - grad @ v) <= 1e-10 * abs(grad @ v)
    fg = fglib.forward_gradient(tf.f, theta, v, engine=engine)
    assert torch.equal(fg.g, fg.d * v)
    # the same through the model interface the training loop uses
    model = fglib.PointModel(tf.f, (0.7, -0.3))
    _, d_model = fglib.module_jvp(model, fglib.value_loss, None, None, [v], engine=engine)
    assert abs(d_model - grad @ v) <= 1e-10 * abs(grad @ v)


@pytest.mark.parametrize("name", fglib.FUNCTIONS)
def test_minima_are_stationary_points_with_value_zero(name):
    tf = fglib.get_function(name)
    theta = torch.tensor(tf.minimum, dtype=torch.float64, requires_grad=True)
    value = tf.f(theta)
    (grad,) = torch.autograd.grad(value, theta)
    assert value.item() == 0 and grad.abs().max() == 0


def test_no_backward_pass_is_needed():
    """Parameters without requires_grad, autograd recording off: still a forward gradient."""
    model = fglib.build_model("mlp", seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    with torch.no_grad():
        fg = fglib.module_forward_gradient(model, F.cross_entropy, x, y, generator=fglib.make_generator(0))
    assert fg.d.ndim == 0 and torch.isfinite(fg.d) and fg.d != 0
    assert all(g.shape == p.shape and not g.requires_grad for g, p in zip(fg.g, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_forward_gradient_step_is_algorithm_1():
    """One SGD step of ForwardGradientDescent is theta - eta * d * v with the v of its step seed."""
    model = fglib.build_model("logreg", seed=0, dtype=torch.float64)
    x, y = torch.randn(16, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    method = fglib.ForwardGradientDescent(model, F.cross_entropy, lr=0.1, seed=5)
    method.step(x, y)
    v = method.directions(method.last_seeds[0])
    _, d = fglib.module_jvp(fglib.build_model("logreg", seed=0, dtype=torch.float64), F.cross_entropy, x, y, v)
    for p, p0, vi in zip(model.parameters(), before, v):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * d * vi)


def test_non_scalar_loss_is_refused():
    model = fglib.build_model("logreg", seed=0)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    per_example = lambda out, y: F.cross_entropy(out, y, reduction="none")
    with pytest.raises(ValueError, match="scalar"):
        fglib.module_forward_gradient(model, per_example, x, y)
    with pytest.raises(ValueError, match="scalar"):
        fglib.Backprop(model, per_example, lr=0.1).step(x, y)


def test_k_directions_average_k_forward_gradients():
    """With n_directions=K the step uses the mean of K forward gradients, one per step seed."""
    model = fglib.build_model("logreg", seed=0, dtype=torch.float64)
    x, y = torch.randn(16, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (16,))
    method = fglib.ForwardGradientDescent(model, F.cross_entropy, lr=0.1, n_directions=3, seed=7)
    method.fill_grad(x, y)
    assert len(set(method.last_seeds)) == 3
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for s in method.last_seeds:
        fg = fglib.module_forward_gradient(model, F.cross_entropy, x, y, directions=method.directions(s))
        expected = [e + g / 3 for e, g in zip(expected, fg.g)]
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e)


def test_regenerated_directions_are_bit_identical():
    """regenerate=True re-draws v for the update: the trained weights equal, bit for bit, those
    of a method that kept v; and the v given to the forward-mode pass is the v of the seed."""
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    kept, redrawn = [fglib.ForwardGradientDescent(fglib.build_model("mlp", seed=0), F.cross_entropy, 1e-3,
                                                  seed=3, regenerate=r) for r in (False, True)]
    seen = []
    jvp = redrawn._jvp
    redrawn._jvp = lambda x, y, *v: (seen.append([t.clone() for t in v]), jvp(x, y, *v))[1]
    for _ in range(3):
        kept.step(x, y), redrawn.step(x, y)
        assert all(torch.equal(a, b) for a, b in zip(seen[-1], redrawn.directions(redrawn.last_seeds[0])))
    assert all(torch.equal(a, b) for a, b in zip(kept.model.parameters(), redrawn.model.parameters()))


def test_each_step_draws_a_fresh_direction():
    """Successive updates on the same batch point in unrelated directions (|cos| near 0 for
    n = 7,850); a generator re-seeded at every step would repeat v and give |cos| = 1."""
    x, y = torch.randn(32, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (32,))
    model = fglib.build_model("logreg", seed=0, dtype=torch.float64)
    method = fglib.ForwardGradientDescent(model, F.cross_entropy, lr=1e-3, seed=0, decay=0.0)
    flat = lambda: torch.cat([p.detach().flatten() for p in model.parameters()])
    points = [flat()]
    for _ in range(4):
        method.step(x, y)
        points.append(flat())
    steps = [b - a for a, b in zip(points, points[1:])]
    cos = [float(a @ b / (a.norm() * b.norm())) for a, b in zip(steps, steps[1:])]
    assert max(abs(c) for c in cos) < 0.1
    # the control: re-seeding before every step repeats the direction, and the check sees it
    grads = []
    for _ in range(2):
        method.seeds.manual_seed(0)
        method.fill_grad(x, y)
        grads.append(torch.cat([p.grad.flatten() for p in method.params]))
    assert abs(float(grads[0] @ grads[1] / (grads[0].norm() * grads[1].norm()))) > 0.999


@pytest.mark.parametrize("engine", ENGINES)
def test_frozen_parameters_stay_untouched(engine):
    """Parameters with requires_grad=False are neither perturbed nor updated, as in backprop."""
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    model = fglib.build_model("mlp", seed=0)
    frozen = model[1].weight
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    method = fglib.ForwardGradientDescent(model, F.cross_entropy, lr=1e-2, engine=engine)
    for _ in range(3):
        method.step(x, y)
    assert torch.equal(frozen, before) and frozen.grad is None
    assert not torch.equal(model[3].weight, fglib.build_model("mlp", seed=0)[3].weight)
    assert len(method.params) == len(list(model.parameters())) - 1


def test_unknown_layer_names_the_layer_and_the_engines():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Tanh())
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    v = fglib.sample_directions(list(model.parameters()))
    with pytest.raises(ValueError, match=r"layer 2 \(Tanh\).*engine='forward_ad' \(or 'func'\)"):
        fglib.module_jvp(model, F.cross_entropy, x, y, v, engine="fglib")
    assert fglib.ForwardGradientDescent(model, F.cross_entropy, 0.1).engine == "forward_ad"  # auto


def test_unknown_loss_names_the_engines():
    model = fglib.build_model("logreg")
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    v = fglib.sample_directions(list(model.parameters()))
    with pytest.raises(ValueError, match="no tangent rule for the loss.*engine='forward_ad'"):
        fglib.module_jvp(model, F.nll_loss, x, y, v, engine="fglib")


def _signs_from(words):
    table = fglib.directions.sign_table(torch.float64, "cpu")
    return table[words.view(torch.uint8).long()].view(len(words), 64)


def _balanced(cols):
    """Every bit position (column) has mean sign within 4.5 standard errors of 0."""
    return bool(cols.mean(0).abs().max() < 4.5 / len(cols) ** 0.5)


def test_rademacher_signs_use_every_bit():
    """Each of the 64 bit positions of the random words gives a balanced sign (20,000 words).
    The control must fail: int64 words from random_(), whose top bit is always 0."""
    v = fglib.directions.rademacher(64 * 20_000, torch.float64, "cpu", fglib.make_generator(0))
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    cols = v.view(20_000, 64)
    assert _balanced(cols)
    neighbours = (cols[:, :-1] * cols[:, 1:]).mean()  # adjacent bits independent: E = 0
    assert abs(neighbours) < 4.5 / (20_000 * 63) ** 0.5
    control = torch.empty(20_000, dtype=torch.int64).random_(generator=fglib.make_generator(0))
    assert not _balanced(_signs_from(control))


def test_orthogonal_directions_of_one_step_are_orthogonal_and_regenerated_from_one_seed():
    model = fglib.build_model("logreg", seed=0).double()
    method = fglib.make_method("fg", model, F.cross_entropy, 1e-3, direction="orthogonal", n_directions=4)
    method.fill_grad(torch.randn(8, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (8,)))
    assert len(method.last_seeds) == 1
    block = method.directions(method.last_seeds[0])
    flat = torch.stack([torch.cat([t.flatten() for t in v]) for v in block])
    n = flat.shape[1]
    torch.testing.assert_close(flat @ flat.T, n * torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="regenerate=True needs directions drawn one at a time"):
        fglib.make_method("fg", model, F.cross_entropy, 1e-3, direction="orthogonal", regenerate=True)


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_batched_tangents_give_the_same_step_as_k_passes(name):
    """float64: K = 3 tangents through one vmapped pass give the very d of three passes, so
    the two steps agree to rounding."""
    x, y = torch.randn(4, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (4,))
    grads = {}
    for batched in (False, True):
        model = fglib.build_model(name, seed=0, dtype=torch.float64, **MODELS[name])
        method = fglib.make_method("fg", model, F.cross_entropy, 1e-3, seed=5, n_directions=3, batched=batched)
        method.fill_grad(x, y)
        grads[batched] = [p.grad for p in method.params]
    for a, b in zip(grads[False], grads[True]):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


def test_projected_combination_is_exact_when_the_directions_span_the_space():
    """combine='project' with K = n directions gives grad f exactly (float64); the control, the
    mean of the same K = n directions, does not."""
    from fglib.functions import PointModel, get_function, value_loss
    beale = get_function("beale")
    grads = {}
    for combine in ("project", "mean"):
        model = PointModel(beale.f, (1.5, -0.1))
        method = fglib.make_method("fg", model, value_loss, 0.1, seed=3, n_directions=2, combine=combine)
        method.fill_grad(None, None)
        grads[combine] = model.theta.grad.clone()
    theta = torch.tensor((1.5, -0.1), dtype=torch.float64, requires_grad=True)
    beale.f(theta).backward()
    assert torch.allclose(grads["project"], theta.grad, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(grads["mean"], theta.grad, rtol=1e-3)


def test_projected_combination_is_shrunk_by_k_over_n_in_expectation():
    """For f = c . theta in n = 8 dimensions and K = 2 Gaussian directions, the mean of g over
    4,000 steps is (K/n) c within 4.5 standard errors per component; the control, c itself, is
    far outside."""
    from fglib.functions import PointModel, value_loss
    c = torch.linspace(-1, 1, 8, dtype=torch.float64)
    model = PointModel(lambda t: (c * t).sum(), [0.0] * 8)
    method = fglib.make_method("fg", model, value_loss, 0.1, seed=0, n_directions=2, combine="project")
    samples = []
    for _ in range(4000):
        method.fill_grad(None, None)
        samples.append(model.theta.grad.clone())
    g = torch.stack(samples)
    se = g.std(0) / math.sqrt(len(g))
    assert ((g.mean(0) - 2 / 8 * c).abs() / se).max() < 4.5
    assert ((g.mean(0) - c).abs() / se).max() > 10


def test_projected_combination_refuses_what_it_cannot_do():
    from fglib.functions import PointModel, value_loss
    model = PointModel(lambda t: (t ** 2).sum(), [1.0, 2.0])
    with pytest.raises(ValueError, match="combine='project' needs every direction"):
        fglib.make_method("fg", model, value_loss, 0.1, n_directions=2, combine="project", regenerate=True)
    with pytest.raises(ValueError, match="combine must be one of"):
        fglib.make_method("fg", model, value_loss, 0.1, combine="sum")
