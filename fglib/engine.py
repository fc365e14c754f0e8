"""fglib's own forward-mode engine: every layer computes its value and its tangent side by side.

The paper built its forward-mode AD "entirely independent of the reverse AD". This is
the same idea in plain tensor operations, with no torch.autograd anywhere: a value x
travels with its tangent dx = J x . v (the directional derivative of x along v), and
each layer below maps (x, dx) to (y, dy), its derivative rule beside its forward rule.
A tangent of None means zero (a value that does not depend on the parameters, such as
the input images), so the first layer does no work for it.

    Linear     y = x W^T + b          dy = dx W^T + x dW^T + db
    Conv2d     y = W * x + b          dy = W * dx + dW * x + db     (* is convolution)
    ReLU       y = max(x, 0)          dy = dx . [x > 0]
    MaxPool2d  y = x[argmax]          dy = dx[argmax]
    Flatten    y = reshape(x)         dy = reshape(dx)
    AdaptiveAvgPool2d   y = mean over windows   dy = the same mean of dx
    cross-entropy, mean over a batch of B rows with labels c:
               L = mean(lse(z) - z_c)  dL = mean(sum_j p_j dz_j - dz_c),  p = softmax(z)
               (and PyTorch's options: class weights, ignore_index, label smoothing,
               probabilities as targets, sum or mean; see cross_entropy_terms)

The loss's tangent needs no softmax Jacobian: the Jacobian-vector product of
logsumexp is the p-weighted sum of the logits' tangents.

For functions of one tensor (the test functions), `Dual` carries (value, tangent) through
+, -, *, /, @, **, abs, indexing, sum and a few torch functions, micrograd-style.

The engine never returns a wrong d silently: `check` (run when a method is built and at
every call) refuses, with `Unsupported`, any model, layer option, hook or loss it cannot
tell it computes exactly; engine='auto' then uses forward_ad instead.
"""
import functools

import torch
import torch.nn.functional as F
from torch import nn


# ---- layers: (module, [x, dx], tangents of its parameters) -> (y, dy) ----------------------
# A rule takes x and dx out of the list it is handed (`take`), so that once it has used them, it
# holds the last reference to a value the caller no longer needs and frees it then: the working
# set of a step is one layer's input and output, not the caller's copies too. Each rule orders its
# work so that as few activation-sized tensors as possible are alive at once.

class Owned(list):
    """A hand-off [x, dx] that nothing else holds or shares storage with (run_layers makes one from
    a rule's fresh outputs): the next rule may overwrite x and dx in place, as ReLU does. A plain
    list promises nothing: the first layer's input is the caller's batch."""


def take(io):
    """(x, dx) out of the hand-off list [x, dx], which is left empty."""
    x, dx = io
    io.clear()
    return x, dx


def _add(a, b):
    """a + b where None means zero."""
    return b if a is None else (a if b is None else a + b)


def linear(layer, io, dp):
    """y = x W^T + b,  dy = dx W^T + x dW^T + db  (a frozen W or b contributes no term)."""
    x, dx = take(io)
    dw, db = dp.get("weight"), dp.get("bias")
    dy = None if dx is None else F.linear(dx, layer.weight)
    del dx
    if dw is not None:
        dy = F.linear(x, dw, db) if dy is None else dy.add_(F.linear(x, dw, db))
    y = F.linear(x, layer.weight, layer.bias)
    del x
    if dw is None and db is not None:
        dy = db.expand_as(y) if dy is None else dy.add_(db)
    return y, dy


def conv2d(layer, io, dp):
    """y = W * pad(x) + b,  dy = W * pad(dx) + dW * pad(x) + db (convolution is linear in x and
    in W; padding other than zeros, such as 'reflect', is a linear map of x, so dx is padded alike)."""
    def conv(inp, w, b):
        if layer.padding_mode != "zeros":
            inp = F.pad(inp, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        padding = 0 if layer.padding_mode != "zeros" else layer.padding
        return F.conv2d(inp, w, b, layer.stride, padding, layer.dilation, layer.groups)
    x, dx = take(io)
    if x.dim() != 4:
        raise UnsupportedBatch(f"fglib's engine takes Conv2d input as a batch (B, C, H, W); got shape {tuple(x.shape)}.")
    dw, db = dp.get("weight"), dp.get("bias")
    dy = None if dx is None else conv(dx, layer.weight, None)
    del dx
    if dw is not None:
        dy = conv(x, dw, db) if dy is None else dy.add_(conv(x, dw, db))
    y = conv(x, layer.weight, layer.bias)
    del x
    if dw is None and db is not None:
        dy = db[:, None, None].expand_as(y) if dy is None else dy.add_(db[:, None, None])
    return y, dy


def relu(layer, io, dp):
    """y = max(x, 0),  dy = dx where x > 0, else 0.

    ReLU's Jacobian is diagonal, so its Jacobian-vector product is the same elementwise mask
    as its vector-Jacobian product: we call that one fused kernel (aten.threshold_backward, a
    plain tensor operation, no autograd), three times faster than dx * (x > 0) on the CNN's
    activations. On a hand-off it owns (Owned) it works in place: y overwrites x, then dy
    overwrites dx (y > 0 exactly where x > 0), so it holds two activation-sized tensors, not three."""
    owned = isinstance(io, Owned)
    x, dx = take(io)
    if owned:
        y = x.relu_()
        if dx is not None:
            torch.ops.aten.threshold_backward.grad_input(dx, y, 0.0, grad_input=dx)
        return y, dx
    dy = None if dx is None else torch.ops.aten.threshold_backward(dx, x, 0.0)
    del dx
    return torch.relu(x), dy


def max_pool2d(layer, io, dp):
    """y = the largest x in each window,  dy = the tangent at that same position."""
    x, dx = take(io)
    y, idx = F.max_pool2d_with_indices(x, layer.kernel_size, layer.stride, layer.padding,
                                       layer.dilation, layer.ceil_mode)
    del x
    if dx is None:
        return y, None
    return y, dx.flatten(2).gather(2, idx.flatten(2)).view_as(y)


def flatten(layer, io, dp):
    """A reshape of the value and the same reshape of the tangent. (Any linear layer without
    parameters, such as average pooling, maps its tangent as it maps its value.)"""
    x, dx = take(io)
    return layer(x), None if dx is None else layer(dx)


def point(model, io, dp):
    """A test function's point model: f(theta) evaluated on the dual number (theta, dtheta)."""
    io.clear()
    out = run_on_dual(model.f, model.theta, dp.get("theta"))
    if not isinstance(out, Dual):
        return out, None
    return out.value, out.tangent


LAYERS = {nn.Linear: linear, nn.Conv2d: conv2d, nn.ReLU: relu, nn.MaxPool2d: max_pool2d,
          nn.Flatten: flatten, nn.AdaptiveAvgPool2d: flatten}


# ---- losses: (z, dz, target) -> (L, dL) ---------------------------------------------------

def check_target(z, target):
    """Targets as PyTorch's cross-entropy takes them for logits z of shape (B, C): class indices,
    an integer tensor of shape (B,), or class probabilities, a floating tensor of shape (B, C).
    Anything else gets a ValueError that says both forms, not a broadcasting error from deep in
    the rule. Shapes and dtypes only: no values are read, so a GPU is not synchronised. Logits of
    another shape, e.g. (B, C, L), are Unsupported (engine='auto' then uses forward_ad)."""
    if z.dim() != 2:
        raise UnsupportedBatch(f"fglib's engine takes logits of shape (B, C); the model gave {tuple(z.shape)}.")
    b, c = z.shape
    indices = not target.is_floating_point() and target.shape == (b,)
    probabilities = target.is_floating_point() and target.shape == (b, c)
    if not (indices or probabilities):
        kind = "floating" if target.is_floating_point() else str(target.dtype).removeprefix("torch.")
        raise ValueError(f"labels must be class indices, an integer tensor of shape ({b},), or class probabilities, "
                         f"a floating tensor of shape ({b}, {c}); got a {kind} tensor of shape {tuple(target.shape)}")


def check_labels(z, labels, ignore_index=-100):
    """Class labels in [0, C) (or ignore_index); otherwise a ValueError that says which."""
    n_classes = z.shape[1]
    bad = ((labels < 0) | (labels >= n_classes)) & (labels != ignore_index)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"labels must be class indices in [0, {n_classes}) (or ignore_index={ignore_index}, "
                         f"which the loss skips); got {int(labels[i])} at position {i}")


def _target_weights(z, target, weight, ignore_index, label_smoothing, reduction):
    """q (B, C) and the divisor n with L = sum_i sum_j q_ij (lse(z_i) - z_ij) / n, as PyTorch defines
    cross-entropy: q_i is the one-hot label (or the given probabilities), smoothed to
    (1 - eps) q_i + eps / C and weighted by the class weights w_j; an ignored row is zero. The
    mean divides by the summed weights of the labels kept (hard labels) or by B (probabilities)."""
    n_classes = z.shape[1]
    w = torch.ones(n_classes, dtype=z.dtype, device=z.device) if weight is None else weight.to(z.dtype)
    if target.is_floating_point():  # class probabilities
        q = target * (1 - label_smoothing) + label_smoothing / n_classes
        return q * w, torch.tensor(float(z.shape[0] if reduction == "mean" else 1), dtype=z.dtype)
    ignored = target == ignore_index
    c = target.masked_fill(ignored, 0)[:, None]
    kept = (~ignored).to(z.dtype)[:, None]
    q = torch.zeros_like(z).scatter_(1, c, 1 - label_smoothing) + label_smoothing / n_classes
    n = (w[c] * kept).sum() if reduction == "mean" else torch.tensor(1.0, dtype=z.dtype)
    return q * w * kept, n


def cross_entropy_terms(z, dz, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Each example's share of the loss, c_i (L = sum_i c_i), and its tangent dc_i:

        c_i = sum_j q_ij (lse(z_i) - z_ij) / n,   dc_i = (s_i sum_j p_ij dz_ij - sum_j q_ij dz_ij) / n

    with p = softmax(z), s_i = sum_j q_ij and q, n from _target_weights (d lse = p . dz: the
    Jacobian-vector product of logsumexp is the p-weighted sum of the tangents). Plain labels
    (no weights, no smoothing) take the gather path: q_i is one-hot, s_i = 1."""
    check_target(z, target)
    if not target.is_floating_point():
        target = target.long()   # uint8 or int32 labels, as PyTorch's cross-entropy takes them
    if not target.is_floating_point() and target.device.type == "cpu":
        check_labels(z, target, ignore_index)   # on a GPU, fglib.train checks the data once instead
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    p = None if dz is None else torch.exp(z - lse)
    if target.is_floating_point() or weight is not None or label_smoothing:
        q, n = _target_weights(z, target, weight, ignore_index, label_smoothing, reduction)
        s = q.sum(1)
        c = (s * lse[:, 0] - (q * z).sum(1)) / n
        dc = None if dz is None else (s * (p * dz).sum(1) - (q * dz).sum(1)) / n
    else:
        kept = target != ignore_index
        labels = target.masked_fill(~kept, 0)[:, None]
        n = kept.sum() if reduction == "mean" else 1
        c = (lse - z.gather(1, labels))[:, 0] * kept / n
        dc = None if dz is None else ((p * dz).sum(1) - dz.gather(1, labels)[:, 0]) * kept / n
    return c, torch.zeros_like(c) if dc is None else dc


def cross_entropy(z, dz, labels, **options):
    """L = mean(lse(z) - z_c),  dL = mean(sum_j softmax(z)_j dz_j - dz_c), with PyTorch's
    options (class weights, ignore_index, label smoothing, probabilities as targets, sum or
    mean): the sums of cross_entropy_terms."""
    c, dc = cross_entropy_terms(z, dz, labels, **options)
    return c.sum(), dc.sum()


def value(out, dout, target):
    """A test function's loss is its value: L = f, dL = df."""
    return out, torch.zeros_like(out) if dout is None else dout


CROSS_ENTROPY_OPTIONS = ("weight", "ignore_index", "label_smoothing", "reduction")


def cross_entropy_options(loss_fn):
    """The options of a cross-entropy loss the engine implements exactly, as a dict, or
    Unsupported naming what it cannot: F.cross_entropy (PyTorch's defaults), a
    functools.partial of it with keyword options, or an nn.CrossEntropyLoss (exactly that
    class, no hooks). Reductions: 'mean' and 'sum' ('none' gives no scalar loss)."""
    if loss_fn is F.cross_entropy:
        return {}
    if isinstance(loss_fn, functools.partial) and loss_fn.func is F.cross_entropy and not loss_fn.args:
        options = dict(loss_fn.keywords)
    elif type(loss_fn) is nn.CrossEntropyLoss:
        _check_no_hooks(loss_fn, "the loss")
        options = {"weight": loss_fn.weight, "ignore_index": loss_fn.ignore_index,
                   "label_smoothing": loss_fn.label_smoothing, "reduction": loss_fn.reduction}
    else:
        raise Unsupported(f"fglib's engine has no tangent rule for the loss {loss_fn!r}; it knows "
                          "F.cross_entropy, nn.CrossEntropyLoss and fglib.value_loss.")
    unknown = set(options) - set(CROSS_ENTROPY_OPTIONS)
    if unknown or options.get("reduction", "mean") not in ("mean", "sum"):
        raise Unsupported(f"fglib's engine implements cross-entropy with {', '.join(CROSS_ENTROPY_OPTIONS)} and "
                          f"reduction 'mean' or 'sum'; got {options}.")
    return options


def _loss_rule(loss_fn):
    from .functions import value_loss
    if loss_fn is value_loss:
        return value
    return functools.partial(cross_entropy, **cross_entropy_options(loss_fn))


# ---- what the engine can tell it computes exactly -------------------------------------------

class Unsupported(ValueError):
    """fglib's engine cannot compute this model's d exactly. engine='auto' then uses forward_ad;
    engine='fglib' raises this, naming the layer or option."""

    def __init__(self, reason):
        self.reason = reason   # without the advice, for methods that take no engine= (FG-A, fd_inplace)
        super().__init__(f"{reason} Use engine='forward_ad' (or 'func'), which differentiates any PyTorch "
                         "module and loss exactly.")


class UnsupportedBatch(Unsupported):
    """The model is one the engine runs, this batch's shapes are not (an unbatched image, logits
    other than (B, C)): engine='auto' gives the batch to forward_ad, as PyTorch would run it."""


def _observer(hook):
    """PyTorch's ModuleTracker (which FlopCounterMode installs) only records which module runs:
    its global hooks return nothing and change no value, so skipping them leaves d exact."""
    from torch.utils.module_tracker import ModuleTracker
    return isinstance(getattr(hook, "__self__", None), ModuleTracker)


def _torch_forward(cls):
    """torch's own forward of `cls`, or None where it was already patched when fglib was imported."""
    forward = cls.forward
    return forward if (forward.__module__.startswith("torch.nn.")
                       and forward.__qualname__ == f"{cls.__name__}.forward") else None


def _own_forward(cls):
    """False when torch's own forward of a class the engine knows was patched (e.g. nn.Linear.forward
    = my_forward): the engine's rule would compute what torch's forward did, not the patch. An
    identity test against the forwards recorded at import, which torch.compile traces as it runs
    (it cannot read a function's __qualname__ while tracing)."""
    if cls not in _TORCH_FORWARDS:
        return True
    return cls.forward is _TORCH_FORWARDS[cls]


_TORCH_FORWARDS = {cls: _torch_forward(cls) for cls in (*LAYERS, nn.Sequential)}


def _check_no_hooks(module, where):
    """The engine calls layer rules, not modules: a hook or a replaced forward would be skipped."""
    from torch.nn.modules import module as module_mod
    found = [kind for kind, hooks in (("forward hook", module._forward_hooks),
                                      ("forward pre-hook", module._forward_pre_hooks),
                                      ("global forward hook", module_mod._global_forward_hooks),
                                      ("global forward pre-hook", module_mod._global_forward_pre_hooks))
             if any(not _observer(h) for h in hooks.values())]
    if "forward" in vars(module):
        found.append("forward replaced on the instance")
    elif not _own_forward(type(module)):
        found.append(f"forward replaced on its class ({type(module).forward.__qualname__})")
    if found:
        raise Unsupported(f"{where} ({type(module).__name__}) has a {found[0]}, which fglib's engine would skip.")


def sequential_layers(model, doing, other, whole):
    """The layers of an nn.Sequential that a method calls one at a time (the in-place steps), or a
    ValueError: another module (`other` can run it) or a hook anywhere, which calling the layers
    one by one would skip (`whole` calls the model whole). `doing` says what the method does."""
    if type(model) is not nn.Sequential:
        raise ValueError(f"{doing} an nn.Sequential one layer at a time; got {type(model).__name__}: use {other} "
                         "for any other module")
    try:
        _check_no_hooks(model, "model")
    except Unsupported as err:
        raise ValueError(f"{err.reason} Use {whole}, which calls the model whole.") from None
    return list(model)


def _check_options(i, layer):
    if isinstance(layer, nn.MaxPool2d) and layer.return_indices:
        raise Unsupported(f"layer {i} (MaxPool2d) has return_indices=True, which fglib's engine does not support.")


# ---- the engine ----------------------------------------------------------------------------

def layers_of(model, where="model", probe=True):
    """[(layer, rule)] for the engine to run, or Unsupported naming the first thing it cannot
    run exactly. "Exactly" is checked, not assumed: the model is an nn.Sequential (that very
    class, whose forward calls its layers in order) or fglib's PointModel whose function runs
    on Dual; each layer is exactly one of the classes in LAYERS (a subclass or a parametrized
    layer may compute something else); no module has a forward hook, a forward pre-hook or a
    forward replaced on the instance, and no global forward hook is registered (the engine
    calls rules, not modules, so it would skip them); and each layer's options are ones its
    rule implements. The loss is checked by cross_entropy_options."""
    from .functions import PointModel
    _check_no_hooks(model, where)
    if type(model) is PointModel:
        if probe:  # run f once on Dual numbers (module_jvp skips this: its own run would fail alike)
            run_on_dual(model.f, model.theta.detach(), torch.zeros_like(model.theta))
        return [(model, point)]
    if type(model) is not nn.Sequential:
        raise Unsupported(f"fglib's engine runs nn.Sequential models (as fglib.build_model returns) and "
                          f"fglib's test-function models; got {type(model).__name__}.")
    rules = []
    for i, layer in enumerate(model):
        rule = LAYERS.get(type(layer))
        if rule is None:
            known = ", ".join(t.__name__ for t in LAYERS)
            raise Unsupported(f"fglib's engine has no tangent rule for layer {i} ({type(layer).__name__}); it "
                              f"knows {known}.")
        _check_no_hooks(layer, f"layer {i}")
        _check_options(i, layer)
        rules.append((layer, rule))
    return rules


def check(model, loss_fn, probe=True):
    """The engine's rules for this model and loss, or Unsupported saying why it is not exact."""
    return layers_of(model, probe=probe), _loss_rule(loss_fn)


def supports(model, loss_fn):
    """True when check() finds the engine exact for this model and loss (engine='auto' then picks it)."""
    try:
        check(model, loss_fn)
    except Unsupported:
        return False
    return True


@torch.no_grad()
def module_jvp(model, loss_fn, x, y, tangents):
    """(L, dL) for loss_fn(model(x), y), where `tangents` maps id(parameter) -> its tangent v
    (parameters not in it are constants). The checks run at every call, so a hook added after
    a method was built is refused, never skipped."""
    rules, loss_rule = check(model, loss_fn, probe=False)
    return loss_rule(*run_layers(rules, x, lambda layer: {
        name: tangents[id(p)] for name, p in layer.named_parameters(recurse=False) if id(p) in tangents}), y)


def _storages(tensors):
    """The storages behind the tensors among `tensors` (None, a tangent of zero, is skipped); None
    where a tensor has no storage of its own to compare, as inside torch.func.vmap."""
    out = set()
    for t in tensors:
        if isinstance(t, torch.Tensor):
            try:
                out.add(t.untyped_storage().data_ptr())
            except (NotImplementedError, RuntimeError):
                return None
    return out


def run_layers(rules, x, tangents_of):
    """(value, tangent) of the last layer for input x (tangent zero), each layer's rule given its
    parameters' tangents `tangents_of(layer)`. Only the hand-off list holds a layer's input
    between layers, so each is freed inside the next rule once used (see take). A rule's outputs
    are handed on as Owned (the next rule may overwrite them) unless they share storage with the
    caller's input, a parameter, a tangent of v, or an earlier output that was not owned (a view
    such as Flatten's, or Linear's bias tangent expanded)."""
    io, protected = [x, None], _storages([x])   # None: storages cannot be compared, nothing is owned
    del x
    for layer, rule in rules:
        dp = tangents_of(layer)
        shared = _storages([*dp.values(), *layer.parameters(recurse=False)])
        protected = None if protected is None or shared is None else protected | shared
        out = rule(layer, io, dp)
        del dp
        stored = _storages(out)
        owned = protected is not None and stored is not None and not stored & protected
        io = Owned(out) if owned else list(out)
        if not owned and protected is not None and stored is not None:
            protected |= stored
        del out
    return take(io)


# ---- dual numbers for functions of one tensor -----------------------------------------------

def _scale(t, s):
    """t * s where a tangent t of None means zero."""
    return None if t is None else t * s


class Dual:
    """A value with its tangent; each operation's derivative sits beside its forward rule.
    An operation without a rule here raises Unsupported (never a silent wrong tangent)."""

    def __init__(self, value, tangent=None):
        self.value, self.tangent = value, tangent

    @staticmethod
    def lift(other):
        return other if isinstance(other, Dual) else Dual(other, None)

    def __add__(self, other):  # d(a + b) = da + db
        o = Dual.lift(other)
        return Dual(self.value + o.value, _add(self.tangent, o.tangent))

    __radd__ = __add__

    def __neg__(self):  # d(-a) = -da
        return Dual(-self.value, _scale(self.tangent, -1))

    def __sub__(self, other):  # d(a - b) = da - db
        return self + (-Dual.lift(other))

    def __rsub__(self, other):
        return Dual.lift(other) + (-self)

    def __mul__(self, other):  # d(a b) = da b + a db
        o = Dual.lift(other)
        return Dual(self.value * o.value, _add(_scale(self.tangent, o.value), _scale(o.tangent, self.value)))

    __rmul__ = __mul__

    def __truediv__(self, other):  # d(a / b) = da / b - a db / b^2
        o = Dual.lift(other)
        t = _add(_scale(self.tangent, 1 / o.value), _scale(o.tangent, -self.value / o.value ** 2))
        return Dual(self.value / o.value, t)

    def __rtruediv__(self, other):
        return Dual.lift(other) / self

    def __matmul__(self, other):  # d(A B) = dA B + A dB
        o = Dual.lift(other)
        da = None if self.tangent is None else self.tangent @ o.value
        db = None if o.tangent is None else self.value @ o.tangent
        return Dual(self.value @ o.value, _add(da, db))

    def __rmatmul__(self, other):
        return Dual.lift(other) @ self

    def __pow__(self, k):  # d(a^k) = k a^(k-1) da, k a constant
        if isinstance(k, Dual):
            raise Unsupported("fglib's Dual supports constant exponents only.")
        if k == 0:   # a^0 = 1 everywhere, a 0 included: derivative 0 (k a^(k-1) would give 0 * inf there)
            return Dual(self.value ** 0, _scale(self.tangent, 0))
        return Dual(self.value ** k, _scale(self.tangent, k * self.value ** (k - 1)))

    def __abs__(self):  # d|a| = sign(a) da
        return Dual(self.value.abs(), _scale(self.tangent, self.value.sign()))

    def __getitem__(self, index):  # indexing is linear
        return Dual(self.value[index], None if self.tangent is None else self.tangent[index])

    def sum(self, *args, **kwargs):  # summing is linear
        return Dual(self.value.sum(*args, **kwargs), None if self.tangent is None else self.tangent.sum(*args, **kwargs))

    # comparisons and truth look at the value only (they carry no tangent)
    def __lt__(self, other): return self.value < Dual.lift(other).value
    def __le__(self, other): return self.value <= Dual.lift(other).value
    def __gt__(self, other): return self.value > Dual.lift(other).value
    def __ge__(self, other): return self.value >= Dual.lift(other).value
    def __eq__(self, other): return self.value == Dual.lift(other).value
    def __ne__(self, other): return self.value != Dual.lift(other).value
    __hash__ = None   # compared by value, as a tensor is
    def __bool__(self): return bool(self.value)

    # torch functions of one Dual: f(a) and f'(a), so d f(a) = f'(a) da
    RULES = {torch.sin: torch.cos, torch.cos: lambda a: -torch.sin(a), torch.exp: torch.exp,
             torch.log: lambda a: 1 / a, torch.log1p: lambda a: 1 / (1 + a), torch.sqrt: lambda a: 0.5 / torch.sqrt(a),
             torch.tanh: lambda a: 1 - torch.tanh(a) ** 2, torch.sigmoid: lambda a: torch.sigmoid(a) * (1 - torch.sigmoid(a))}

    # tensor (op) Dual, or torch.add(tensor, Dual): the rules above, with the tensor lifted
    BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
              "div": lambda a, b: a / b, "true_divide": lambda a, b: a / b, "matmul": lambda a, b: a @ b}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.RULES and len(args) == 1 and not kwargs:
            a = args[0]
            return Dual(func(a.value), _scale(a.tangent, cls.RULES[func](a.value)))
        name = getattr(func, "__name__", "").strip("_")
        if name in cls.BINARY and len(args) == 2 and not kwargs:
            return cls.BINARY[name](Dual.lift(args[0]), Dual.lift(args[1]))
        raise Unsupported(f"fglib's Dual has no rule for {getattr(func, '__name__', func)}; it knows + - * / @ **, "
                          f"abs, indexing, sum and {', '.join(f.__name__ for f in cls.RULES)}.")

    def __getattr__(self, name):  # e.g. theta.mean(): no rule (run_on_dual turns this into Unsupported)
        raise AttributeError(f"fglib's Dual has no rule for .{name}")


@torch.no_grad()
def run_on_dual(f, theta, v):
    """f(Dual(theta, v)); Unsupported if f uses an operation Dual has no rule for (Python's own
    TypeError for a missing operator counts too): a failure, never a wrong tangent."""
    try:
        return f(Dual(theta, v))
    except (TypeError, AttributeError, NotImplementedError) as err:
        raise Unsupported(f"the function does not run on fglib's Dual numbers ({type(err).__name__}: {err}).") from err


def jvp(f, theta, v):
    """(f(theta), grad f(theta) . v) for a function written with the operations Dual knows."""
    out = run_on_dual(f, theta, v)
    if not isinstance(out, Dual):  # f does not depend on theta
        return out, torch.zeros_like(out)
    return out.value, torch.zeros_like(out.value) if out.tangent is None else out.tangent
