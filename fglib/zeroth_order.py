"""The directional derivative as a limit: zeroth-order estimators beside the forward gradient.

Forward mode computes d = grad f . v exactly. Without any automatic differentiation, d can
only be approximated from values of f along v:

    one-sided   d_h = (f(theta + h v) - f(theta)) / h            = d + (h/2) v'H v + O(h^2)
    central     d_h = (f(theta + h v) - f(theta - h v)) / (2h)   = d + (h^2/6) D^3f[v,v,v] + O(h^4)

and g = d_h v as for the forward gradient: SPSA (Spall 1992) with normal rather than +-1
directions, as in MeZO (Malladi et al. 2023). The truncation error shrinks with h; the
rounding error of f's values, about eps |f| / h, grows as h shrinks, so in float32 there is a
best h and an error floor that forward mode does not have.

FiniteDifferenceDescent is ForwardGradientDescent with d replaced by d_h: with the same seed it
draws the very same directions, so the two differ only in exact against approximate d.

InPlaceFiniteDifference is MeZO's memory-lean scheme: no gradient buffer, no copy of the
parameters, v regenerated from the step's seed one parameter tensor at a time, and plain SGD
applied in place, theta_i -= lr d_h v_i. MeZO perturbs theta in place and subtracts the
perturbation again; in floating point, (theta + hv) - hv is not always theta, so that scheme
changes the weights a little at every step even with a learning rate of 0. Here the
perturbed weights exist only while their own layer runs, W + hV made on the fly, one layer
at a time, so theta is never written until the update and stays bit-identical. The extra
memory beyond inference is one layer's perturbed weight.
"""
import torch

from . import checks
from .directions import ONE_AT_A_TIME, per_tensor_direction
from . import engine
from .methods import ForwardGradientDescent, Method, check_batch
from .substitute import call_with

SCHEMES = ("forward", "central")


def check_h(h):
    """The step h of a finite difference (e.g. 1e-3): a positive finite number."""
    return checks.real("h", h, positive=True)


def combine(f_plus, f_other, h, scheme):
    """(loss, d_h) from f(theta + hv) and f(theta) (one-sided) or f(theta - hv) (central).
    The central scheme reports (f+ + f-)/2 = f(theta) + O(h^2) as its loss."""
    if scheme == "forward":
        return f_other, (f_plus - f_other) / h
    return (f_plus + f_other) / 2, (f_plus - f_other) / (2 * h)


@torch.no_grad()
def finite_difference(model, loss_fn, x, y, v, h, scheme="central", params=None):
    """(loss, d_h) for loss_fn(model(x), y) along v (one tensor per parameter, in the order of
    `params`, by default the model's trainable parameters). Two forward passes; the
    perturbed parameters theta +- h v are new tensors, the model's own are not touched."""
    h, scheme = check_h(h), checks.choice("scheme", scheme, SCHEMES)
    params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    if len(v) != len(params):
        raise ValueError(f"v must hold one tensor per parameter ({len(params)}), got {len(v)}")

    def f(sign):
        moved = {id(p): p + (sign * h) * vi for p, vi in zip(params, v)}
        return loss_fn(call_with(model, moved, (x,)), y)

    return combine(f(1), f(-1) if scheme == "central" else loss_fn(model(x), y), h, scheme)


class FiniteDifferenceDescent(ForwardGradientDescent):
    """Forward gradient descent with d = grad f . v replaced by its finite difference d_h
    (SPSA); the same directions from the same seed, the same optimisers."""
    name = "finite difference"

    def __init__(self, model, loss_fn, lr, h=1e-3, scheme="central", **kwargs):
        self.h, self.scheme = check_h(h), checks.choice("scheme", scheme, SCHEMES)
        if kwargs.get("batched"):
            raise ValueError("batched=True carries tangents through forward mode; finite differences have "
                             "none: leave batched=False")
        super().__init__(model, loss_fn, lr, **kwargs)
        self.engine = f"{self.scheme} difference, h = {self.h:g}"

    def _make_jvp(self):
        def estimate(x, y, *v):
            return finite_difference(self.model, self.loss_fn, x, y, v, self.h, self.scheme, self.params)
        return torch.compile(estimate, mode=self.compile) if self.compile else estimate


class InPlaceFiniteDifference(Method):
    """MeZO's scheme: d_h from forward passes with the perturbation made on the fly, v
    regenerated from the step's seed, and theta -= lr d_h v applied in place. Plain SGD only
    (an optimiser with state would need parameter-sized buffers); any nn.Sequential (its layers
    are called as modules, hooks included, one at a time)."""
    name = "finite difference, in place"

    def __init__(self, model, loss_fn, lr, h=1e-3, scheme="central", direction="normal", seed=0, **kwargs):
        self.refuse_state(kwargs, "the in-place scheme", "FiniteDifferenceDescent",
                          "FiniteDifferenceDescent for {optimizer}")
        super().__init__(model, loss_fn, lr, **kwargs)
        self.h, self.scheme = check_h(h), checks.choice("scheme", scheme, SCHEMES)
        self.direction = checks.choice("direction", direction, ONE_AT_A_TIME)
        self.layers = engine.sequential_layers(model, "the in-place scheme perturbs", "make_method('fd', ...)",
                                               "make_method('fd', ...)")
        self.seed = checks.seed("seed", seed)
        self.seeds = torch.Generator().manual_seed(self.seed)
        self.generator = torch.Generator(self.params[0].device)
        self.index = {id(p): i for i, p in enumerate(self.params)}
        self.last_seeds = []

    def direction_of(self, step_seed, p):
        """v's part for parameter p: the same (step seed, parameter) always gives the same draw."""
        return per_tensor_direction(p, self.index[id(p)], step_seed, self.direction, self.generator)

    @torch.no_grad()
    def perturbed_loss(self, x, y, step_seed, scale):
        """loss_fn(model with theta + scale v, x), each layer's W + scale V made as it runs."""
        out = x
        for layer in self.layers:
            own = [p for p in layer.parameters() if id(p) in self.index]   # nested modules' too
            if scale == 0 or not own:
                out = layer(out)
                continue
            moved = {id(p): self.direction_of(step_seed, p).mul_(scale).add_(p) for p in own}
            out = call_with(layer, moved, (out,))
            del moved
        return self.loss_fn(out, y)

    @torch.no_grad()
    def step(self, x=None, y=None):
        check_batch(x)
        step_seed = int(torch.randint(2 ** 62, (), generator=self.seeds))
        self.last_seeds = [step_seed]
        f_plus = self.perturbed_loss(x, y, step_seed, self.h)
        f_other = self.perturbed_loss(x, y, step_seed, -self.h if self.scheme == "central" else 0.0)
        loss, d = combine(f_plus, f_other, self.h, self.scheme)
        lr = self.optimizer.param_groups[0]["lr"]
        if lr * float(d) != 0:
            for p in self.params:
                p.add_(self.direction_of(step_seed, p), alpha=-lr * float(d))
        self.decay_rate()
        return loss

