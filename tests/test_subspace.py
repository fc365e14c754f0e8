"""Training in a random subspace (fglib.subspace): the model starts as the original, the
gradient of z is P^T grad_theta in float64 for both methods, only z trains, and bad input fails
clearly."""
import pytest
import torch
import torch.nn.functional as F

import fglib


def setup(dim=50, seed=1):
    model = fglib.build_model("mlp", seed=0).double()
    sub = fglib.RandomSubspace(model, dim, seed=seed)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 1, 28, 28, dtype=torch.float64, generator=g), torch.randint(0, 10, (8,), generator=g)
    return model, sub, x, y


def test_starts_as_the_original_model_and_trains_only_z():
    model, sub, x, y = setup()
    plain = fglib.build_model("mlp", seed=0).double()
    assert torch.equal(sub(x), plain(x))
    method = fglib.make_method("fg", sub, F.cross_entropy, 1e-3, seed=0)
    assert method.params == [sub.z]
    before = [p.clone() for p in model.parameters()]
    method.step(x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and sub.z.abs().sum() > 0


def test_the_gradient_of_z_is_the_projected_gradient_for_both_methods():
    """d loss / d z_j = sum_{i: b(i) = j} s_i g_i, with g backprop's gradient of the plain model at
    theta_0 + P z; forward mode's d = grad_z . v agrees to float64 precision. The control: the same
    sum with the signs dropped is not the gradient."""
    model, sub, x, y = setup()
    with torch.no_grad():
        sub.z.normal_(generator=torch.Generator().manual_seed(5))
    fglib.make_method("bp", sub, F.cross_entropy, 1.0).fill_grad(x, y)
    grad_z = sub.z.grad.clone()
    moved = fglib.build_model("mlp", seed=0).double()
    with torch.no_grad():
        for p, w in zip(moved.parameters(), sub.weights().values()):
            p.copy_(w)
    F.cross_entropy(moved(x), y).backward()
    g = torch.cat([p.grad.flatten() for p in moved.parameters()])
    projected = torch.zeros(sub.dim, dtype=torch.float64).index_add_(0, sub.bucket, sub.sign * g)
    assert torch.allclose(grad_z, projected, rtol=1e-10, atol=1e-12)
    unsigned = torch.zeros(sub.dim, dtype=torch.float64).index_add_(0, sub.bucket, g)
    assert not torch.allclose(grad_z, unsigned, rtol=1e-3)
    v = torch.randn(sub.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    _, d = fglib.module_jvp(sub, F.cross_entropy, x, y, [v], params=[sub.z])
    assert float(d) == pytest.approx(float(grad_z @ v), rel=1e-10)


def test_the_same_seed_gives_the_same_projection():
    a, b, c = (fglib.RandomSubspace(fglib.build_model("logreg", seed=0), 20, seed=s) for s in (4, 4, 5))
    assert torch.equal(a.bucket, b.bucket) and torch.equal(a.sign, b.sign)
    assert not torch.equal(a.bucket, c.bucket)


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="dim"):
        fglib.RandomSubspace(fglib.build_model("logreg"), 0)
    with pytest.raises(ValueError, match="dim"):
        fglib.RandomSubspace(fglib.build_model("logreg"), 10 ** 9)
    with pytest.raises(TypeError, match="model"):
        fglib.RandomSubspace("mlp", 10)
