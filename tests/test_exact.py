"""fglib never returns a wrong d silently: a differential test over ordinary PyTorch models.

For every model and loss of a corpus (float64), d = grad L . v from engine='auto' and from
every engine that accepts the model equals forward_ad's to 1e-12 relative; fglib's own engine
either agrees or refuses, at once, with Unsupported naming what it cannot do (and so does a
forward-gradient method built with engine='fglib'). Each case also says which of the two the
engine must do, so that a rule that refused everything would fail here too. A property-based
part (hypothesis) draws random nn.Sequential stacks of the layers the engine knows, sometimes
with one it does not, with random frozen parameters and random cross-entropy options.
"""
import functools
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import fglib
from fglib.engine import Unsupported

DT = torch.float64
B, CLASSES = 6, 4


def images(channels=1, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, channels, size, size, dtype=DT, generator=g)


LABELS = torch.tensor([0, 1, 2, 3, 1, 2])            # every class, label 1 twice
WITH_DEFAULT_IGNORED = torch.tensor([0, -100, 2, 3, 1, -100])
SOFT = torch.softmax(torch.randn(B, CLASSES, dtype=DT, generator=torch.Generator().manual_seed(3)), 1)


def mlp(*extra, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 5), nn.ReLU(), *extra, nn.Linear(5, CLASSES)).to(DT)


def cnn(padding_mode="zeros", seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode=padding_mode), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(18, CLASSES)).to(DT)


def hooked(kind):
    model = mlp()
    if kind == "forward hook":
        model[1].register_forward_hook(lambda module, inputs, out: 3 * out)
    elif kind == "forward pre-hook":
        model[1].register_forward_pre_hook(lambda module, inputs: (2 * inputs[0],))
    elif kind == "hook on the model":
        model.register_forward_hook(lambda module, inputs, out: out - out.mean())
    elif kind == "forward replaced":
        layer = model[1]
        layer.forward = lambda x: F.linear(x, layer.weight, layer.bias) * 0.5
    return model


def frozen(model, *names):
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(False)
    return model


def tied():
    torch.manual_seed(0)
    first, second = nn.Linear(36, 36), nn.Linear(36, CLASSES)
    shared = nn.Linear(36, 36)
    shared.weight = first.weight      # the same Parameter in two layers
    return nn.Sequential(nn.Flatten(), first, nn.ReLU(), shared, nn.ReLU(), second).to(DT)


def used_twice():
    torch.manual_seed(0)
    shared = nn.Linear(36, 36)
    return nn.Sequential(nn.Flatten(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(36, CLASSES)).to(DT)


class TwoPath(nn.Module):
    """A custom module that is not an nn.Sequential."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(36, CLASSES), nn.Linear(36, CLASSES)

    def forward(self, x):
        x = x.flatten(1)
        return self.a(x) + torch.tanh(self.b(x))


class MySequential(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 2


class MyCrossEntropy(nn.CrossEntropyLoss):
    def forward(self, z, y):
        return super().forward(z, y) + z.pow(2).mean()


class Doubled(nn.Module):
    def forward(self, weight):
        return 2 * weight


def parametrized():
    model = mlp()
    parametrize.register_parametrization(model[1], "weight", Doubled())
    return model


# name: (model builder, loss, target, what fglib's engine must do)
CORPUS = {
    # hooks and pre-hooks: the engine calls rules, not modules, so it must refuse
    "forward hook x3": (lambda: hooked("forward hook"), F.cross_entropy, LABELS, "refuse"),
    "forward pre-hook": (lambda: hooked("forward pre-hook"), F.cross_entropy, LABELS, "refuse"),
    "hook on the Sequential": (lambda: hooked("hook on the model"), F.cross_entropy, LABELS, "refuse"),
    "forward replaced on a layer": (lambda: hooked("forward replaced"), F.cross_entropy, LABELS, "refuse"),
    # PyTorch's cross-entropy options: implemented
    "ignore_index with labels equal to it": (mlp, nn.CrossEntropyLoss(ignore_index=1), LABELS, "exact"),
    "default ignore_index -100": (mlp, F.cross_entropy, WITH_DEFAULT_IGNORED, "exact"),
    "class weights": (mlp, nn.CrossEntropyLoss(weight=torch.tensor([1.0, 0.5, 2.0, 3.0], dtype=DT)), LABELS, "exact"),
    "label smoothing": (mlp, nn.CrossEntropyLoss(label_smoothing=0.2), LABELS, "exact"),
    "weights, smoothing and ignore_index": (
        mlp, nn.CrossEntropyLoss(weight=torch.tensor([1.0, 0.5, 2.0, 3.0], dtype=DT), label_smoothing=0.1,
                                 ignore_index=2), LABELS, "exact"),
    "reduction sum": (mlp, nn.CrossEntropyLoss(reduction="sum"), LABELS, "exact"),
    "probabilities as targets": (mlp, F.cross_entropy, SOFT, "exact"),
    "probabilities, weights, smoothing": (
        mlp, nn.CrossEntropyLoss(weight=torch.tensor([1.0, 0.5, 2.0, 3.0], dtype=DT), label_smoothing=0.1), SOFT,
        "exact"),
    "functools.partial of F.cross_entropy": (mlp, functools.partial(F.cross_entropy, label_smoothing=0.3,
                                                                    ignore_index=0), LABELS, "exact"),
    "a CrossEntropyLoss subclass": (mlp, MyCrossEntropy(), LABELS, "refuse"),
    "another loss (MSE on logits)": (mlp, lambda z, y: F.mse_loss(z, F.one_hot(y, CLASSES).to(DT)), LABELS, "refuse"),
    # frozen parts
    "Linear with frozen weight, trainable bias": (lambda: frozen(mlp(), "1.weight"), F.cross_entropy, LABELS, "exact"),
    "Conv2d with frozen weight, trainable bias": (lambda: frozen(cnn(), "0.weight"), F.cross_entropy, LABELS, "exact"),
    "a whole layer frozen": (lambda: frozen(cnn(), "4.weight", "4.bias"), F.cross_entropy, LABELS, "exact"),
    # layer options
    "Conv2d padding_mode reflect": (lambda: cnn("reflect"), F.cross_entropy, LABELS, "exact"),
    "Conv2d padding_mode circular": (lambda: cnn("circular"), F.cross_entropy, LABELS, "exact"),
    "Conv2d padding_mode replicate": (lambda: cnn("replicate"), F.cross_entropy, LABELS, "exact"),
    "a parametrization (weight doubled)": (parametrized, F.cross_entropy, LABELS, "refuse"),
    # layers the engine does not know
    "LayerNorm": (lambda: mlp(nn.LayerNorm(5)).to(DT), F.cross_entropy, LABELS, "refuse"),
    "Dropout in eval mode": (lambda: mlp(nn.Dropout(0.5)).eval(), F.cross_entropy, LABELS, "refuse"),
    "BatchNorm in eval mode": (lambda: mlp(nn.BatchNorm1d(5)).to(DT).eval(), F.cross_entropy, LABELS, "refuse"),
    "nested Sequential": (lambda: nn.Sequential(nn.Flatten(), mlp()[1:]), F.cross_entropy, LABELS, "refuse"),
    # structure
    "tied weights": (tied, F.cross_entropy, LABELS, "exact"),
    "a module used twice": (used_twice, F.cross_entropy, LABELS, "exact"),
    "custom nn.Module (not Sequential)": (lambda: TwoPath().to(DT), F.cross_entropy, LABELS, "refuse"),
    "Sequential subclass with its own forward": (lambda: MySequential(*mlp()), F.cross_entropy, LABELS, "refuse"),
}


def directions(params, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, dtype=p.dtype, generator=g) for p in params]


def close(a, b):
    return abs(float(a) - float(b)) <= 1e-12 * abs(float(b)) + 1e-15


def differential(model, loss, x, y, params, must):
    """auto and func equal forward_ad; fglib equals it or refuses, as `must` says."""
    v = directions(params)
    ref_loss, ref_d = fglib.module_jvp(model, loss, x, y, v, params, engine="forward_ad")
    for engine in ("auto", "func"):
        got_loss, got_d = fglib.module_jvp(model, loss, x, y, v, params, engine=engine)
        assert close(got_loss, ref_loss) and close(got_d, ref_d), (engine, float(got_d), float(ref_d))
    if must == "refuse":
        with pytest.raises(Unsupported, match="engine='forward_ad'"):
            fglib.module_jvp(model, loss, x, y, v, params, engine="fglib")
        assert not fglib.engine.supports(model, loss)
    else:
        got_loss, got_d = fglib.module_jvp(model, loss, x, y, v, params, engine="fglib")
        assert close(got_loss, ref_loss) and close(got_d, ref_d), ("fglib", float(got_d), float(ref_d))
        assert fglib.engine.supports(model, loss)


@pytest.mark.parametrize("case", CORPUS, ids=list(CORPUS))
def test_every_engine_gives_forward_ads_d_or_refuses(case):
    build, loss, y, must = CORPUS[case]
    model = build()
    params = [p for p in model.parameters() if p.requires_grad]
    differential(model, loss, images(), y, params, must)


@pytest.mark.parametrize("case", [c for c in CORPUS if CORPUS[c][3] == "refuse"])
def test_engine_fglib_is_refused_when_the_method_is_built(case):
    build, loss, _, _ = CORPUS[case]
    with pytest.raises(Unsupported, match="engine='forward_ad'"):
        fglib.make_method("fg", build(), loss, 1e-3, engine="fglib")
    assert fglib.make_method("fg", build(), loss, 1e-3).engine == "forward_ad"   # auto picks forward_ad


def test_parameters_in_another_order_and_a_subset():
    model = cnn()
    params = list(model.parameters())[::-1]
    differential(model, F.cross_entropy, images(), LABELS, params, "exact")
    differential(model, F.cross_entropy, images(), LABELS, params[1:3], "exact")


def test_a_tensor_that_is_not_a_parameter_of_the_model_is_refused():
    model, stranger = mlp(), nn.Linear(36, 5).to(DT).weight
    with pytest.raises(ValueError, match=r"params\[0\].*not a parameter of the model"):
        fglib.module_jvp(model, F.cross_entropy, images(), LABELS, directions([stranger]), [stranger])


def test_a_hook_added_after_the_method_was_built_is_refused_not_skipped():
    model = mlp()
    method = fglib.make_method("fg", model, F.cross_entropy, 1e-3)
    assert method.engine == "fglib"
    model[1].register_forward_hook(lambda module, inputs, out: 3 * out)
    with pytest.raises(Unsupported, match="forward hook"):
        method.step(images(), LABELS)


def test_a_global_forward_hook_is_refused():
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, inputs, out: out)
    try:
        model = mlp()
        differential(model, F.cross_entropy, images(), LABELS, list(model.parameters()), "refuse")
    finally:
        handle.remove()


def test_weight_norm_is_refused_and_auto_fails_loudly_where_forward_ad_cannot():
    """PyTorch's forward mode has no rule for weight_norm's kernel: no engine gives a number."""
    model = mlp()
    parametrizations.weight_norm(model[1])
    v = directions(list(model.parameters()))
    with pytest.raises(Unsupported, match=r"layer 1 \(ParametrizedLinear\)"):
        fglib.module_jvp(model, F.cross_entropy, images(), LABELS, v, engine="fglib")
    with pytest.raises(NotImplementedError, match="forward AD"):
        fglib.module_jvp(model, F.cross_entropy, images(), LABELS, v, engine="auto")


def test_flop_counting_is_not_mistaken_for_a_hook():
    """FlopCounterMode's global hooks only observe; the engine stays exact under it."""
    from torch.utils.flop_counter import FlopCounterMode
    model = mlp()
    v = directions(list(model.parameters()))
    want = fglib.module_jvp(model, F.cross_entropy, images(), LABELS, v, engine="forward_ad")
    with FlopCounterMode(display=False):
        got = fglib.module_jvp(model, F.cross_entropy, images(), LABELS, v, engine="fglib")
    assert all(close(a, b) for a, b in zip(got, want))


def test_labels_outside_the_classes_are_refused_by_name():
    bad = LABELS.clone()
    bad[4] = CLASSES
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 4\).*got 4 at position 4"):
        fglib.module_jvp(mlp(), F.cross_entropy, images(), bad, directions(list(mlp().parameters())), engine="fglib")


@pytest.mark.parametrize("bad, got", [(LABELS.double(), "a floating tensor of shape (6,)"),
                                      (LABELS[:, None], "a int64 tensor of shape (6, 1)"),
                                      (LABELS[:5], "a int64 tensor of shape (5,)"),
                                      (torch.ones(B, CLASSES + 1, dtype=DT) / 5, "a floating tensor of shape (6, 5)")])
def test_targets_of_the_wrong_shape_or_type_are_refused_with_both_forms_named(bad, got):
    """Float labels, a column of labels, one label short and probabilities over the wrong number of
    classes: each a ValueError naming the two forms the loss takes, where PyTorch's forward mode
    refuses them too (control: the same targets in the right form give forward_ad's d)."""
    model, v = mlp(), directions(list(mlp().parameters()))
    said = ("labels must be class indices, an integer tensor of shape (6,), or class probabilities, a floating "
            f"tensor of shape (6, 4); got {got}")
    with pytest.raises(ValueError, match=re.escape(said)):
        fglib.module_jvp(model, F.cross_entropy, images(), bad, v, engine="fglib")
    with pytest.raises((RuntimeError, ValueError)):
        fglib.module_jvp(model, F.cross_entropy, images(), bad, v, engine="forward_ad")
    for good in (LABELS, F.one_hot(LABELS, CLASSES).to(DT)):
        want = fglib.module_jvp(model, F.cross_entropy, images(), good, v, engine="forward_ad")
        got_fglib = fglib.module_jvp(model, F.cross_entropy, images(), good, v, engine="fglib")
        assert all(close(a, b) for a, b in zip(got_fglib, want))


# ---- test functions on Dual numbers ----------------------------------------------------------

FUNCTIONS = {
    "beale": (fglib.beale, "exact"),
    "division, matmul, sin, exp, abs": (
        lambda t: torch.sin(t[0]) / (1 + t[1] ** 2) + t @ t + torch.exp(t).sum() + abs(t[0]) - 1 / t[1], "exact"),
    "a tensor on the left": (lambda t: (torch.tensor([2.0, -1.0], dtype=DT) * t - torch.ones(2, dtype=DT) / t).sum(),
                             "exact"),
    "log1p, tanh and a constant matrix (forward and reverse mode's toy function)": (
        lambda t: torch.log1p((torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=DT) @ torch.tanh(t)) ** 2).sum(), "exact"),
    "torch.atan (no rule)": (lambda t: torch.atan(t).sum(), "refuse"),
    "a method with no rule (.mean)": (lambda t: t.mean() * t[0], "refuse"),
    "a Dual exponent": (lambda t: t[0] ** t[1], "refuse"),
    "a branch on ==": (lambda t: 2 * t[0] if t[0] == 0.3 else 3 * t[1], "exact"),
    "a branch on !=": (lambda t: 2 * t[0] if t[1] != 0.7 else 3 * t[1], "exact"),
    "the power 0 at 0": (lambda t: (((t - torch.tensor([0.3, 0.0], dtype=DT)) ** 0) * t).sum(), "exact"),
}


@pytest.mark.parametrize("case", FUNCTIONS, ids=list(FUNCTIONS))
def test_dual_numbers_give_forward_ads_d_or_refuse(case):
    f, must = FUNCTIONS[case]
    theta, v = torch.tensor([0.3, 0.7], dtype=DT), torch.tensor([1.0, -2.0], dtype=DT)
    ref = fglib.jvp(f, theta, v, engine="forward_ad")
    assert all(close(a, b) for a, b in zip(fglib.jvp(f, theta, v, engine="auto"), ref))
    model = fglib.PointModel(f, [0.3, 0.7])
    if must == "refuse":
        with pytest.raises(Unsupported, match="engine='forward_ad'"):
            fglib.jvp(f, theta, v, engine="fglib")
        with pytest.raises(Unsupported):
            fglib.make_method("fg", model, fglib.value_loss, 1e-3, engine="fglib")
        assert fglib.make_method("fg", model, fglib.value_loss, 1e-3).engine == "forward_ad"
    else:
        assert all(close(a, b) for a, b in zip(fglib.jvp(f, theta, v, engine="fglib"), ref))
        assert fglib.make_method("fg", model, fglib.value_loss, 1e-3).engine == "fglib"


# ---- property-based: random stacks, frozen subsets and loss options -------------------------

UNKNOWN = {"Tanh": lambda n: nn.Tanh(), "LayerNorm": lambda n: nn.LayerNorm(n), "GELU": lambda n: nn.GELU()}


@st.composite
def stacks(draw):
    """(model, loss, target, whether the stack holds a layer the engine does not know)."""
    seed = draw(st.integers(0, 2 ** 16))
    torch.manual_seed(seed)
    channels, size, layers = 1, 6, []
    for _ in range(draw(st.integers(0, 2))):
        if size < 3:
            break
        out = draw(st.integers(1, 3))
        layers += [nn.Conv2d(channels, out, 3, padding=draw(st.sampled_from([0, 1])), bias=draw(st.booleans()),
                             padding_mode=draw(st.sampled_from(["zeros", "reflect"]))), nn.ReLU()]
        channels, size = out, size - 2 + 2 * layers[-2].padding[0]
        if size >= 4 and draw(st.booleans()):
            layers.append(nn.MaxPool2d(2))
            size //= 2
    layers.append(nn.Flatten())
    width = channels * size * size
    for _ in range(draw(st.integers(0, 2))):
        out = draw(st.integers(2, 6))
        layers += [nn.Linear(width, out, bias=draw(st.booleans())), nn.ReLU()]
        width = out
    unknown = draw(st.sampled_from([None, *UNKNOWN]))
    if unknown:
        anywhere = unknown != "LayerNorm"   # elementwise layers fit anywhere; LayerNorm(width) at the end
        layers.insert(draw(st.integers(0, len(layers))) if anywhere else len(layers), UNKNOWN[unknown](width))
    layers.append(nn.Linear(width, CLASSES))
    model = nn.Sequential(*layers).to(DT)
    for p in model.parameters():
        p.requires_grad_(draw(st.booleans()) or draw(st.booleans()))   # about a quarter frozen
    options = dict(ignore_index=draw(st.sampled_from([-100, 0, 3])), label_smoothing=draw(st.sampled_from([0.0, 0.1])),
                   reduction=draw(st.sampled_from(["mean", "sum"])))
    if draw(st.booleans()):
        options["weight"] = torch.tensor([1.0, 0.5, 2.0, 3.0], dtype=DT)
    return model, nn.CrossEntropyLoss(**options), unknown is not None


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(stacks())
def test_random_stacks_with_frozen_parameters(stack):
    model, loss, has_unknown = stack
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    differential(model, loss, images(), LABELS, params, "refuse" if has_unknown else "exact")


def parameter_state(model):
    return [(name, type(p), p.requires_grad, p.data_ptr()) for name, p in model.named_parameters()]


@pytest.mark.parametrize("build", [used_twice, tied], ids=["module used twice", "tied weights"])
@pytest.mark.parametrize("name,engine", [("fg", "forward_ad"), ("fg", "func"), ("fg", "fglib"), ("fd", "auto")])
def test_shared_weights_give_backprops_d_and_leave_the_model_as_it_was(build, name, engine):
    """d = grad f . v against backprop in float64, and the model's parameters stay Parameters that
    backprop can train. Control: torch's functional_call given the deduplicated names leaves the
    weight of a module used twice a plain tensor, which is what fglib used to do."""
    model, x = build(), images()
    params = list(model.parameters())
    v = directions(params)
    model.zero_grad()
    F.cross_entropy(model(x), LABELS).backward()
    want = sum((p.grad * vi).sum() for p, vi in zip(params, v))
    before = parameter_state(model)
    if name == "fg":
        _, d = fglib.module_jvp(model, F.cross_entropy, x, LABELS, v, params, engine=engine)
        assert close(d, want)
    else:
        _, d = fglib.zeroth_order.finite_difference(model, F.cross_entropy, x, LABELS, v, h=1e-6)
        assert abs(float(d - want)) < 1e-8 * abs(float(want))   # h small enough to step over no ReLU kink
    assert parameter_state(model) == before
    if build is used_twice:
        named = {n: p.detach() + 0 for n, p in model.named_parameters()}
        torch.func.functional_call(model, named, (x,))
        assert not isinstance(model[1].weight, nn.Parameter)   # the control: torch's own tie handling


def test_a_forward_patched_on_torchs_class_is_refused_not_skipped(monkeypatch):
    """nn.Linear.forward replaced for every Linear: the engine's rule would compute the unpatched
    layer, so it refuses, and auto picks forward_ad, which runs the patch (control: unpatched, the
    engine runs the model)."""
    model, x = mlp(), images()
    assert fglib.make_method("fg", model, F.cross_entropy, 1e-3).engine == "fglib"
    original = nn.Linear.forward
    monkeypatch.setattr(nn.Linear, "forward", lambda self, inp: 2 * original(self, inp))
    with pytest.raises(Unsupported, match=r"layer 1 \(Linear\) has a forward replaced on its class"):
        fglib.make_method("fg", model, F.cross_entropy, 1e-3, engine="fglib")
    assert fglib.make_method("fg", model, F.cross_entropy, 1e-3).engine == "forward_ad"
    differential(model, F.cross_entropy, x, LABELS, list(model.parameters()), "refuse")


def unbatched_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(0), nn.Linear(2 * 4 * 4, CLASSES)).to(DT)


def per_pixel():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, CLASSES, 3, padding=1)).to(DT)


BATCHES = {  # batches a model fglib's engine supports can be given, which its rules do not take
    "an unbatched image (C, H, W), 1-D logits": (unbatched_cnn, lambda: images()[0], lambda: LABELS[0]),
    "per-pixel logits (B, C, H, W)": (per_pixel, images, lambda: torch.randint(0, CLASSES, (B, 6, 6))),
}


@pytest.mark.parametrize("case", BATCHES, ids=list(BATCHES))
def test_auto_gives_forward_ad_a_batch_fglibs_engine_cannot_take(case):
    """The model passes the engine's check, the batch does not: engine='fglib' says so, auto and
    a method built with auto give forward_ad's d (they crashed inside the engine's rules)."""
    build, x, y = BATCHES[case]
    model, x, y = build(), x(), y()
    assert fglib.engine.supports(model, F.cross_entropy)
    params = list(model.parameters())
    v = directions(params)
    want = fglib.module_jvp(model, F.cross_entropy, x, y, v, engine="forward_ad")
    with pytest.raises(Unsupported, match="fglib's engine takes"):
        fglib.module_jvp(model, F.cross_entropy, x, y, v, engine="fglib")
    got = fglib.module_jvp(model, F.cross_entropy, x, y, v, engine="auto")
    assert close(got[0], want[0]) and close(got[1], want[1])
    twins = [fglib.make_method("fg", build(), F.cross_entropy, 1e-2, seed=5, engine=e) for e in ("auto", "forward_ad")]
    assert twins[0].engine == "fglib"
    losses = [float(m.step(x, y)) for m in twins]
    assert close(losses[0], losses[1])
    assert all(torch.equal(a, b) for a, b in zip(twins[0].params, twins[1].params))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_labels_of_any_integer_type_give_the_same_d(dtype):
    model, x = mlp(), images()
    v = directions(list(model.parameters()))
    want = fglib.module_jvp(model, F.cross_entropy, x, LABELS, v, engine="forward_ad")
    got = fglib.module_jvp(model, F.cross_entropy, x, LABELS.to(dtype), v, engine="fglib")
    assert close(got[0], want[0]) and close(got[1], want[1])


def test_a_compiled_step_with_fglibs_engine_runs_its_checks_and_matches_the_eager_step(monkeypatch):
    """torch.compile traces the engine's checks as they run at every call: the compiled step moves
    the weights as the eager one does (it once refused every model: the check read a function's
    __qualname__, which tracing cannot), and a forward patched on torch's class is still refused
    under compile (the control)."""
    weights = {}
    for compiled in (False, True):
        model = mlp()
        method = fglib.make_method("fg", model, F.cross_entropy, 1e-2, engine="fglib", seed=1, compile=compiled)
        for _ in range(2):
            method.step(images(), LABELS)
        weights[compiled] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(weights[True], weights[False], rtol=1e-9, atol=1e-12)
    torch._dynamo.reset()
    original = nn.Linear.forward
    monkeypatch.setattr(nn.Linear, "forward", lambda self, inp: 2 * original(self, inp))
    compiled_jvp = torch.compile(lambda x: fglib.engine.module_jvp(mlp(), F.cross_entropy, x, LABELS, {}))
    with pytest.raises(Exception, match="forward replaced on its class"):
        compiled_jvp(images())


def test_relu_works_in_place_only_on_what_the_pass_owns():
    """fglib.engine: ReLU overwrites its input and tangent only on an Owned hand-off, creating no
    new tensor (control: the plain list, the caller's batch, gets two new ones, y and dy), with
    the same values either way."""
    from fglib.engine import Owned, relu
    from fglib.measure import peak_tensor_bytes
    g = torch.Generator().manual_seed(0)
    x, dx = torch.randn(8, 32, dtype=DT, generator=g), torch.randn(8, 32, dtype=DT, generator=g)
    want = relu(nn.ReLU(), [x.clone(), dx.clone()], {})
    got = []
    assert peak_tensor_bytes(lambda: got.extend(relu(nn.ReLU(), Owned([x.clone(), dx.clone()]), {}))) == 2 * x.nbytes
    assert all(torch.equal(a, b) for a, b in zip(got, want))   # the two clones: nothing more
    assert peak_tensor_bytes(lambda: relu(nn.ReLU(), [x, dx], {})) == 2 * x.nbytes and torch.equal(x.relu(), want[0]) \
        and x.min() < 0   # the plain list: x left as it was


@pytest.mark.parametrize("build,shape", [
    (lambda: nn.Sequential(nn.ReLU(), nn.Linear(12, 4)), (6, 12)),                      # the caller's batch first
    (lambda: nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(12, 4)), (6, 12)),        # Flatten hands on the batch itself
    (lambda: nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(12, 4)), (6, 3, 4)),      # ... or a view of it
    (lambda: frozen(nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 4)), "0.weight"), (6, 12)),   # dy = db expanded
], ids=["relu first", "flatten returns the batch", "flatten views the batch", "bias tangent expanded"])
def test_the_pass_never_overwrites_the_callers_batch_or_v(build, shape):
    """ReLU's in-place rule never reaches the caller's batch or a tangent of v (run_layers hands
    those on unowned): both are unchanged after the pass, and d is forward_ad's."""
    torch.manual_seed(0)
    model = build().to(DT)
    x = torch.randn(*shape, dtype=DT)
    params = [p for p in model.parameters() if p.requires_grad]
    v = directions(params)
    x0, v0 = x.clone(), [t.clone() for t in v]
    _, d = fglib.module_jvp(model, F.cross_entropy, x, LABELS, v, params, engine="fglib")
    assert torch.equal(x, x0) and all(torch.equal(a, b) for a, b in zip(v, v0))
    assert close(d, fglib.module_jvp(model, F.cross_entropy, x, LABELS, v, params, engine="forward_ad")[1])
