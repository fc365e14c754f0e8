"""A forward-mode pass run one layer at a time, each layer's part of v drawn as the layer runs.

For a step seed, layer l's part of v is drawn from (step seed, tensor, block)
(fglib.directions.blocked_direction) when layer l runs, and freed once it has run: the pass
never holds v whole. fglib.lean's in-place step runs it, and so does
ForwardGradientDescent(regenerate=True, draw='blocks'), which then draws v whole only to write
.grad.
"""
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.nn import functional as F

from . import engine as fglib_engine
from .directions import block_directions, block_rows, blocked_direction
from .forward_grad import _scalar, _scalar_value_and_tangent
from .substitute import call_with


class LayerwiseJVP:
    """d = grad f . v for the v of a step seed, one layer at a time: layer l's part of v is drawn
    (fglib.directions.blocked_direction) when layer l runs and freed once it has run, so the pass
    never holds v whole. With blocked_linear=True a large Linear weight's part is used a block at a
    time too (x V^T written a block of output columns at a time). Any nn.Sequential whose parameters
    each sit in one layer; fglib's engine where it runs the model exactly, else forward_ad.

    With blocked_linear=False d is, bit for bit, what module_jvp gives for the whole v that
    ForwardGradientDescent(draw='blocks') draws: the same rules run on the same tensors."""

    def __init__(self, model, loss_fn, params, direction, engine, generator, blocked_linear=True,
                 other="make_method('fg', ...)"):
        self.model, self.loss_fn, self.direction, self.generator = model, loss_fn, direction, generator
        self.blocked_linear = blocked_linear
        self.index = {id(p): i for i, p in enumerate(params)}
        self.layers = self._layers(model, other)
        if engine == "auto":
            engine = "fglib" if fglib_engine.supports(model, loss_fn) else "forward_ad"
        elif engine == "fglib":
            fglib_engine.check(model, loss_fn)
        self.engine = engine

    def _layers(self, model, other):
        layers = fglib_engine.sequential_layers(model, "the in-place step runs", other, "make_method('fg', ...)")
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
        return block_directions(p, self.index[id(p)], step_seed, self.direction, self.generator)

    def _blocked(self, layer):
        """True for a Linear layer whose trainable weight is used a block at a time."""
        return (self.blocked_linear and isinstance(layer, nn.Linear) and id(layer.weight) in self.index
                and len(block_rows(layer.weight)) > 1)

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
    def __call__(self, x, y, step_seed):
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
