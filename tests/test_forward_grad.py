"""The directional derivative from forward mode equals grad f . v from backprop."""
import pytest
import torch
import torch.nn.functional as F

import fglib

MODELS = {"logreg": {}, "mlp": {}, "cnn": {}, "deep": {"depth": 3}}


def backprop_grads(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", fglib.DIRECTIONS)
def test_module_jvp_matches_backprop_float64(name, kind):
    model = fglib.build_model(name, seed=0, dtype=torch.float64, **MODELS[name])
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    v = fglib.sample_directions(list(model.parameters()), kind, fglib.make_generator(1))
    loss, d = fglib.module_jvp(model, F.cross_entropy, x, y, v)
    exact = sum((g * vi).sum() for g, vi in zip(backprop_grads(model, x, y), v))
    assert torch.allclose(loss, F.cross_entropy(model(x), y))
    assert abs(d - exact) <= 1e-10 * abs(exact)


@pytest.mark.parametrize("name", fglib.FUNCTIONS)
def test_function_jvp_matches_backprop_float64(name):
    tf = fglib.get_function(name)
    theta = torch.tensor([0.7, -0.3], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(tf.f(theta), theta)
    v = torch.tensor([0.6, 1.9], dtype=torch.float64)
    value, d = fglib.jvp(tf.f, theta, v)
    assert value == tf.f(theta).item()
    assert abs(d - grad @ v) <= 1e-10 * abs(grad @ v)
    fg = fglib.forward_gradient(tf.f, theta, v)
    assert torch.equal(fg.g, fg.d * v)


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
    """One SGD step of ForwardGradientDescent is theta - eta * d * v with the same v."""
    model = fglib.build_model("logreg", seed=0, dtype=torch.float64)
    x, y = torch.randn(16, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    v = fglib.sample_directions(before, "normal", fglib.make_generator(5))
    _, d = fglib.module_jvp(model, F.cross_entropy, x, y, v)
    method = fglib.ForwardGradientDescent(model, F.cross_entropy, lr=0.1, seed=5)
    method.step(x, y)
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
    """With n_directions=K the step uses the mean of K forward gradients, drawn in order."""
    model = fglib.build_model("logreg", seed=0, dtype=torch.float64)
    x, y = torch.randn(16, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (16,))
    params = list(model.parameters())
    gen = fglib.make_generator(7)
    expected = [torch.zeros_like(p) for p in params]
    for _ in range(3):
        fg = fglib.module_forward_gradient(model, F.cross_entropy, x, y, generator=gen)
        expected = [e + g / 3 for e, g in zip(expected, fg.g)]
    method = fglib.ForwardGradientDescent(model, F.cross_entropy, lr=0.1, n_directions=3, seed=7)
    method.fill_grad(x, y)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e)
