"""fg_inplace (fglib.lean): forward gradient descent in place. Bit for bit the weights of
fg(draw='blocks') with plain SGD in float64 on either engine (control: fg's flat draw differs),
unbiased by a statistical test with a control that fails, no weight-sized buffer beyond inference
(control: fg holds one), and clear errors for what it cannot do."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fglib
from fglib import stats
from fglib.lean import InPlaceForwardGradient


def images(n=8, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, dtype=dtype, generator=g), torch.randint(0, 10, (n,), generator=g)


def trained(name, model, steps=4, **kwargs):
    method = fglib.make_method(name, model, F.cross_entropy, 0.05, seed=3, decay=0.1, **kwargs)
    losses = [float(method.step(*images(seed=i))) for i in range(steps)]
    return [p.detach().clone() for p in model.parameters()], losses


def tanh_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Tanh(), nn.Sequential(nn.Linear(16, 16), nn.Tanh()),
                         nn.Linear(16, 10)).double()


MODELS = {"mlp": lambda: fglib.build_model("mlp", seed=0).double(),
          "cnn": lambda: fglib.build_model("cnn", seed=0).double(),
          "Tanh, nested Sequential": tanh_net}


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10)).double()


MODELS["small CNN (every tensor one block)"] = small_net
ENGINES = [(model, engine) for model in MODELS for engine in ("fglib", "forward_ad")
           if not (model.startswith("Tanh") and engine == "fglib")]   # the engine has no Tanh rule


@pytest.mark.parametrize("model,engine", ENGINES)
def test_the_same_weights_as_fg_drawing_in_blocks(model, engine):
    """Bit for bit where forward_ad runs the layers or no Linear weight spans blocks; where fglib's
    engine writes x V^T a block at a time (the MLP's and CNN's 1024-wide layers), equal up to the
    rounding of those products."""
    got, got_losses = trained("fg_inplace", MODELS[model](), engine=engine)
    want, want_losses = trained("fg", MODELS[model](), engine=engine, draw="blocks")
    if engine == "fglib" and model in ("mlp", "cnn"):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
    else:
        assert all(torch.equal(a, b) for a, b in zip(got, want)) and got_losses == want_losses
    flat, _ = trained("fg", MODELS[model](), engine=engine)   # control: another v, other weights
    assert not any(torch.allclose(a, b, rtol=1e-6) for a, b in zip(got, flat))


def test_k_directions_give_fgs_weights_to_rounding():
    """With K > 1, fg sums the K terms before the update and fg_inplace applies them one at a time:
    the same weights up to the order of additions."""
    got, _ = trained("fg_inplace", MODELS["mlp"](), steps=2, n_directions=3)
    want, _ = trained("fg", MODELS["mlp"](), steps=2, n_directions=3, draw="blocks")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_blocked_draws_are_unbiased_and_a_scaled_draw_is_caught():
    """g = d v over 8,000 per-tensor draws on a 6 -> 4 -> 3 network: every component's z-score
    against backprop's gradient is small; with v scaled by sqrt(2) (E[v v^T] = 2I) it is not."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    x, y = torch.randn(5, 1, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
    want = torch.cat([g.flatten() for g in torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))])
    method = InPlaceForwardGradient(net, F.cross_entropy, 1.0, seed=0)

    def samples(scale, n=8000):
        out = []
        for _ in range(n):
            step_seed = int(torch.randint(2 ** 62, (), generator=method.seeds))
            _, d = method.directional_derivative(x, y, step_seed)
            out.append(torch.cat([(scale ** 2 * d * method.direction_of(step_seed, p)).flatten() for p in method.params]))
        return torch.stack(out)

    assert stats.z_scores(samples(1.0), want).abs().max() < 4.5
    assert stats.z_scores(samples(math.sqrt(2)), want).abs().max() > 10


def test_the_step_holds_no_weight_sized_buffer_beyond_inference():
    """Measured with the allocator's count on a 4-layer network of 512 units: beyond inference, one
    step holds at most about one layer's direction; fg holds at least a whole v (control)."""
    model = fglib.build_model("deep", seed=0, depth=4, width=512)
    x, y = images(64, torch.float32)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    largest = max(p.numel() * p.element_size() for p in model.parameters())
    inference = fglib.peak_tensor_bytes(fglib.measure.base_call(model, F.cross_entropy, x, y))
    lean = InPlaceForwardGradient(model, F.cross_entropy, 1e-6)
    lean.step(x, y)
    assert fglib.peak_tensor_bytes(lambda: lean.step(x, y)) - inference <= largest * 1.1
    fg = fglib.make_method("fg", model, F.cross_entropy, 1e-6)
    fg.step(x, y)
    assert fglib.peak_tensor_bytes(lambda: fg.step(x, y)) - inference >= params


@pytest.mark.parametrize("model,engine", ENGINES)
def test_fg_regenerating_v_layer_by_layer_gives_its_weights_bit_for_bit(model, engine):
    """fg(regenerate=True, draw='blocks') runs the pass a layer at a time (fglib.lean.LayerwiseJVP):
    the same rules on the same tensors, so the same weights and losses bit for bit (float64),
    K = 2 included; control: the flat draw gives other weights."""
    for k in (1, 2):
        got, got_losses = trained("fg", MODELS[model](), engine=engine, draw="blocks", regenerate=True, n_directions=k)
        want, want_losses = trained("fg", MODELS[model](), engine=engine, draw="blocks", n_directions=k)
        assert all(torch.equal(a, b) for a, b in zip(got, want)) and got_losses == want_losses
    flat, _ = trained("fg", MODELS[model](), engine=engine, regenerate=True)
    assert not any(torch.allclose(a, b, rtol=1e-6) for a, b in zip(got, flat))


def test_fg_regenerating_v_holds_v_only_to_write_the_gradient():
    """The regenerated fg's peak beyond inference is one v (the new .grad) and at most a block more;
    control: fg drawing v whole for the pass holds v and the pass's working set at once. Also the
    pass runs layer by layer there, and a model it cannot run so (not an nn.Sequential) still trains."""
    model = fglib.build_model("deep", seed=0, depth=4, width=512)
    x, y = images(64, torch.float32)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    inference = fglib.peak_tensor_bytes(fglib.measure.base_call(model, F.cross_entropy, x, y))
    lean = fglib.make_method("fg", model, F.cross_entropy, 1e-6, draw="blocks", regenerate=True)
    assert lean._layerwise is not None
    lean.step(x, y)
    lean_peak = fglib.peak_tensor_bytes(lambda: lean.step(x, y))
    assert lean_peak - params <= 65536 * 4 * 1.05   # v and one block being copied into it
    whole = fglib.make_method("fg", model, F.cross_entropy, 1e-6, draw="blocks")
    whole.step(x, y)
    assert fglib.peak_tensor_bytes(lambda: whole.step(x, y)) - params >= 1.4 * inference   # v, values, tangents
    wrapped = nn.ModuleDict({"net": fglib.build_model("mlp", seed=0)})
    wrapped.forward = lambda x: wrapped["net"](x)
    other = fglib.make_method("fg", wrapped, F.cross_entropy, 1e-2, draw="blocks", regenerate=True)
    assert other._layerwise is None and math.isfinite(float(other.step(x, y)))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_backprop_with_its_update_fused_gives_backprops_weights_bit_for_bit(model):
    """bp_inplace updates each weight as its gradient completes: the same weights and losses as bp
    with plain SGD (float64), and no hook left on the model afterwards (plain bp then trains it as
    it would any model; control: with a hook left, the weights would move twice)."""
    got, got_losses = trained("bp_inplace", MODELS[model]())
    want, want_losses = trained("bp", MODELS[model]())
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and got_losses == want_losses
    net = MODELS[model]()
    fglib.make_method("bp_inplace", net, F.cross_entropy, 0.05).step(*images())
    twin, leaked = _reset(MODELS[model](), net.parameters()), _reset(MODELS[model](), net.parameters())

    def leftover(p):   # what a hook left behind would do: move the weight a second time
        p.data.add_(p.grad, alpha=-0.05)

    for p in leaked.parameters():
        p.register_post_accumulate_grad_hook(leftover)
    after = trained("bp", net, steps=1)[0]
    assert all(torch.equal(a, b) for a, b in zip(after, trained("bp", twin, steps=1)[0]))
    assert not all(torch.equal(a, b) for a, b in zip(after, trained("bp", leaked, steps=1)[0]))


def _reset(model, weights):
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    return model


def test_backprop_in_place_never_holds_the_whole_gradient():
    """Beyond what backprop stores for its backward pass, the fused step holds at most about the
    largest layer's gradient; bp holds the whole gradient (control)."""
    model = fglib.build_model("deep", seed=0, depth=4, width=512)
    x, y = images(64, torch.float32)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    largest = max(p.numel() * p.element_size() for p in model.parameters())
    fused = fglib.make_method("bp_inplace", model, F.cross_entropy, 1e-6)
    fused.step(x, y)
    stored = fglib.saved_bytes(lambda: fused.step(x, y), exclude=list(model.parameters()))
    assert fglib.peak_tensor_bytes(lambda: fused.step(x, y)) <= largest + 2 * stored
    plain = fglib.make_method("bp", model, F.cross_entropy, 1e-6)
    plain.step(x, y)
    assert fglib.peak_tensor_bytes(lambda: plain.step(x, y)) >= params


BAD = {
    "an optimiser with state": (lambda m: {"optimizer": "adam"}, "optimizer must be 'sgd'"),
    "sphere directions": (lambda m: {"direction": "sphere"}, "direction must be one of"),
    "engine func": (lambda m: {"engine": "func"}, "engine='func' differentiates the model whole"),
    "compile": (lambda m: {"compile": True}, "compile=True is not supported"),
}


@pytest.mark.parametrize("case", BAD)
def test_what_the_in_place_step_cannot_do_is_refused_by_name(case):
    kwargs, message = BAD[case]
    model = MODELS["mlp"]()
    with pytest.raises(ValueError, match=message):
        InPlaceForwardGradient(model, F.cross_entropy, 1e-3, **kwargs(model))


def test_a_model_it_cannot_run_layer_by_layer_is_refused():
    shared = nn.Linear(784, 784)
    with pytest.raises(ValueError, match=r"layer 3 \(Linear\) shares a parameter"):
        InPlaceForwardGradient(nn.Sequential(nn.Flatten(), shared, nn.ReLU(), shared), F.cross_entropy, 1e-3)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))
    with pytest.raises(ValueError, match="runs an nn.Sequential one layer at a time; got Custom"):
        InPlaceForwardGradient(Custom(), F.cross_entropy, 1e-3)
    with pytest.raises(ValueError, match="empty batch"):
        InPlaceForwardGradient(MODELS["mlp"](), F.cross_entropy, 1e-3).step(*images(0))


def test_fgs_blocked_draw_is_refused_for_laws_it_would_change():
    with pytest.raises(ValueError, match="draw='blocks'.*direction must be one of"):
        fglib.make_method("fg", MODELS["mlp"](), F.cross_entropy, 1e-3, direction="sphere", draw="blocks")


@pytest.mark.parametrize("kind", ["normal", "rademacher"])
def test_a_tensors_part_of_v_is_the_same_numbers_however_it_is_drawn(kind):
    """Drawn whole (blocked_direction, straight into place), block by block (block_directions, as the
    in-place step's update draws it) or one block alone (block_direction): the same numbers, and the
    ones saved runs and checkpoints were drawn with (pinned: a change of the stream would make a
    resumed run continue with other directions). Control: another step seed gives another v."""
    from fglib.directions import block_direction, block_directions, block_rows, blocked_direction, flat_direction
    g = fglib.make_generator(0)
    for shape in [(1024, 784), (70_000,), (7,), ()]:
        like = torch.empty(shape, dtype=torch.float64)
        whole = blocked_direction(like, 2, 123, kind, g)
        pieces = [v for _, v in block_directions(like, 2, 123, kind, g)]
        alone = [block_direction(like, 2, 123, b, kind, g) for b in range(len(block_rows(like)))]
        assert whole.shape == like.shape and len(pieces) == len(alone) == len(block_rows(like))
        joined = torch.cat([p.reshape(-1) for p in pieces])
        assert torch.equal(whole.reshape(-1), joined) and torch.equal(joined, torch.cat([a.reshape(-1) for a in alone]))
        assert not torch.equal(whole, blocked_direction(like, 2, 124, kind, g)) or like.dim() == 0 and kind == "rademacher"
    for n in (64, 65, 65_536 * 8 + 3):   # into a given buffer: the same numbers as without one
        g.manual_seed(5)
        free = flat_direction(n, kind, torch.float32, "cpu", g)
        g.manual_seed(5)
        assert torch.equal(flat_direction(n, kind, torch.float32, "cpu", g, out=torch.empty(n)), free)
    v = blocked_direction(torch.empty(1024, 784, dtype=torch.float64), 2, 123, kind, g)
    pinned = {"normal": (-78.51604394017681, [0.26180210196055365, 1.4115011664324306, 0.5140983738153795]),
              "rademacher": (1428.0, [1.0, 1.0, 1.0])}[kind]
    assert v.sum().item() == pytest.approx(pinned[0], rel=1e-12) and v[0, :3].tolist() == pinned[1]
