"""Forward gradients with the memory of inference: fg_inplace.

Forward mode keeps no tape, so a forward-gradient step need hold little more than the weights. The
step here is the paper's Algorithm 1 with plain SGD, done in place (MeZO's trick, with an exact JVP
in place of a finite difference):

    d_k = grad f(theta) . v_k     one forward-mode pass, layer by layer: layer l's part of v_k is
                                  drawn from the step's seed when layer l runs, and freed once it
                                  has run
    theta -= (eta / K) d_k v_k    v_k drawn again from the same seed, a block at a time, k = 1..K

v is drawn in blocks of whole rows of at most 65,536 elements (fglib.directions.block_direction),
each from (step seed, tensor, block). On fglib's engine a Linear layer's weight tangent is used a
block at a time too: x V^T is written a block of output columns at a time. So at its peak the step
holds the weights, one layer's values and tangents, and one block of v (or one tensor's part, where
forward_ad runs the layer): no .grad, no optimiser state, no copy of v.

With the same seed it gives the weights of ForwardGradientDescent(draw='blocks') with plain SGD:
bit for bit where forward_ad runs the layers, or where every Linear weight is one block; up to the
rounding of the blocked products otherwise (and of the order of the K updates, for K > 1).
"""
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.nn import functional as F

from . import checks
from . import engine as fglib_engine
from .directions import INDEPENDENT, block_direction, block_rows, blocked_direction, make_generator
from .forward_grad import _scalar, _scalar_value_and_tangent, check_engine
from .methods import MAX_DIRECTIONS, Method, check_batch
from .substitute import call_with


class InPlaceForwardGradient(Method):
    """Forward gradient descent with plain SGD, in place: v is never held whole (see the module's
    docstring). Any nn.Sequential whose parameters each sit in one layer; fglib's engine where it
    runs the model exactly, else PyTorch's forward_ad, one layer at a time."""
    name = "forward gradient, in place"

    def __init__(self, model, loss_fn, lr, direction="normal", n_directions=1, seed=0, engine="auto", **kwargs):
        if kwargs.get("optimizer", "sgd") != "sgd":
            raise ValueError(f"optimizer must be 'sgd' for the in-place step (it keeps no state), got "
                             f"{kwargs['optimizer']!r}; use make_method('fg', ..., optimizer={kwargs['optimizer']!r})")
        if kwargs.get("compile"):
            raise ValueError("compile=True is not supported by the in-place step; use make_method('fg', ...)")
        super().__init__(model, loss_fn, lr, **kwargs)
        self.direction = checks.choice("direction", direction, INDEPENDENT)
        self.n_directions = checks.integer("n_directions", n_directions, minimum=1, maximum=MAX_DIRECTIONS)
        self.layers = self._layers(model)
        self.engine = check_engine(engine)
        if self.engine == "func":
            raise ValueError("engine='func' differentiates the model whole; the in-place step runs it a layer at "
                             "a time: use engine='auto', 'fglib' or 'forward_ad'")
        if self.engine == "auto":
            self.engine = "fglib" if fglib_engine.supports(model, loss_fn) else "forward_ad"
        elif self.engine == "fglib":
            fglib_engine.check(model, loss_fn)
        self.index = {id(p): i for i, p in enumerate(self.params)}
        self.seed = checks.seed("seed", seed)
        self.seeds = torch.Generator().manual_seed(self.seed)
        self.generator = make_generator(0, self.params[0].device)
        self.last_seeds = []

    def _layers(self, model):
        layers = fglib_engine.sequential_layers(model, "the in-place step runs", "make_method('fg', ..., regenerate=True)",
                                                "make_method('fg', ...)")
        seen = set()
        for i, layer in enumerate(layers):
            own = {id(p) for p in layer.parameters()}
            if own & seen:
                raise ValueError(f"layer {i} ({type(layer).__name__}) shares a parameter with an earlier layer; the "
                                 "in-place step draws each tensor's direction as its layer runs: use make_method('fg', ...)")
            seen |= own
        return layers

    def direction_of(self, step_seed, p):
        """v's part for parameter p, whole (fglib.directions.blocked_direction)."""
        return blocked_direction(p, self.index[id(p)], step_seed, self.direction, self.generator)

    def blocks_of(self, step_seed, p):
        """(rows, v's part for those rows of p), one block at a time."""
        for b, (start, stop) in enumerate(block_rows(p)):
            yield slice(start, stop), block_direction(p, self.index[id(p)], step_seed, b, self.direction, self.generator)

    def _blocked(self, layer):
        """True for a Linear layer whose trainable weight is drawn in more than one block."""
        return isinstance(layer, nn.Linear) and id(layer.weight) in self.index and len(block_rows(layer.weight)) > 1

    def _blocked_linear(self, step_seed):
        """fglib.engine.linear with x dW^T written a block of output columns at a time:
        dy[..., rows] += x V_rows^T, so that only one block of the weight's direction is alive."""
        def rule(layer, io, dp):
            x, dx = fglib_engine.take(io)
            dy = x.new_zeros(*x.shape[:-1], layer.out_features) if dx is None else F.linear(dx, layer.weight)
            del dx
            for rows, v in self.blocks_of(step_seed, layer.weight):
                dy[..., rows] += F.linear(x, v)
                del v
            if "bias" in dp:
                dy.add_(dp["bias"])
            return F.linear(x, layer.weight, layer.bias), dy
        return rule

    @torch.no_grad()
    def directional_derivative(self, x, y, step_seed):
        """(loss, d) with d = grad f . v for the v of `step_seed`, each layer's part drawn as it runs."""
        if self.engine == "fglib":
            rules, loss_rule = fglib_engine.check(self.model, self.loss_fn, probe=False)
            rules = [(layer, self._blocked_linear(step_seed) if self._blocked(layer) else rule) for layer, rule in rules]
            out = fglib_engine.run_layers(rules, x, lambda layer: {
                n: self.direction_of(step_seed, p) for n, p in layer.named_parameters(recurse=False)
                if id(p) in self.index and not (n == "weight" and self._blocked(layer))})
            return _scalar(*loss_rule(*out, y))
        with fwAD.dual_level():
            h = x
            for layer in self.layers:
                own = [p for p in layer.parameters() if id(p) in self.index]
                duals = {id(p): fwAD.make_dual(p.detach(), self.direction_of(step_seed, p)) for p in own}
                h = call_with(layer, duals, (h,)) if duals else layer(h)
                del duals
            return _scalar_value_and_tangent(self.loss_fn(h, y))

    @torch.no_grad()
    def step(self, x=None, y=None):
        check_batch(x)
        self.last_seeds = [int(torch.randint(2 ** 62, (), generator=self.seeds)) for _ in range(self.n_directions)]
        terms = []
        for step_seed in self.last_seeds:
            loss, d = self.directional_derivative(x, y, step_seed)
            terms.append((step_seed, d / self.n_directions))
        lr = self.optimizer.param_groups[0]["lr"]
        for step_seed, weight in terms:   # as fg writes .grad = weight v and SGD adds -lr .grad
            for p in self.params:
                for rows, v in self.blocks_of(step_seed, p):
                    (p[rows] if p.dim() else p).add_(v.mul_(weight), alpha=-lr)
        for group in self.optimizer.param_groups:   # the decay, with no optimizer.step() to follow
            group["lr"] *= self.scheduler.gamma
        return loss
