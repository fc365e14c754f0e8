"""Forward gradients that scale: activity perturbation and local losses (Ren, Kornblith, Liao
and Hinton, ICLR 2023), with local backprop as their baseline.

The forward gradient's variance grows with the number of perturbed quantities (E||g||^2 =
(n + 2)||grad f||^2). Two changes cut that number, and neither needs a backward pass:

FG-A, activity perturbation. Instead of the weights, perturb each Linear or Conv2d layer's
output z (pre-activation), one random u_i per example i and unit. One forward pass carries
the tangents (a later layer's tangent includes the earlier u's, as the perturbation would
propagate) to each example's loss l_i and gives d_i = sum over layers of grad_{z_i} l_i . u_i.
With E[u u^T] = I, the estimate of the batch loss's gradient at z and then, as for any linear
layer, at its weights (x_i the layer's input) is

    g_z_i = (d_i / B) u_i,      g_W = sum_i g_z_i x_i^T,      g_b = sum_i g_z_i

(for a convolution, g_W is the correlation of g_z with the input). It is unbiased, and its
variance grows with the units of a layer instead of its weights (1,024 against 803,840 for
the MLP's first layer) -- though a convolution has more outputs per example than weights.

Local losses. On a fglib.LocalNet (blocks with their own classifier heads, no gradient
across blocks) each block's forward gradient perturbs only its own parameters (FG-W) or
activities (FG-A) and is the forward gradient of its own loss L_b. All blocks run in one
forward pass; a block's input is a constant, so its tangent starts at zero.

    fg_a         FG-A on the whole network (a plain nn.Sequential)
    local_fg     FG-W per block of a LocalNet
    local_fg_a   FG-A per block of a LocalNet
    local_bp     backprop through each block's own loss only (the baseline)

FG-W on the whole network is fglib's ForwardGradientDescent ("fg"). Only tensor operations
run in the forward-gradient paths: no autograd graph, no backward pass.
"""
from collections import Counter

import torch
from torch import nn
from torch.nn import functional as F

from . import checks
from . import engine
from .directions import check_direction, make_generator, sample_direction, sample_directions
from .methods import Method
from .models import LocalNet

PERTURBED = (nn.Linear, nn.Conv2d)
ACTIVITY_DIRECTIONS = ("normal", "rademacher")


def blocks_of(model, local):
    """[(block, head)] to run: a LocalNet's blocks, or a plain nn.Sequential as one block."""
    if local and not isinstance(model, LocalNet):
        raise ValueError(f"local methods train a fglib LocalNet (e.g. fglib.build_model('local_mlp')); got "
                         f"{type(model).__name__}: use 'fg', 'fg_a' or 'bp' for a network without local losses")
    if not local and isinstance(model, LocalNet):
        raise ValueError("this model is a LocalNet with local losses: use 'local_fg', 'local_fg_a' or "
                         "'local_bp' (or build the plain network, e.g. 'mlp', for 'fg_a')")
    if isinstance(model, LocalNet):
        return list(zip(model.blocks, model.heads))
    return [(model, nn.Sequential())]


def weight_grads(layer, x, g_z):
    """(g_W, g_b) of a Linear or Conv2d layer from its input x and its output's gradient g_z:
    the layer's own weight rule, g_W = g_z^T x (a correlation for a convolution, over the input as
    the layer pads it: reflected or circular borders, or zeros, 'same' included)."""
    if isinstance(layer, nn.Linear):
        g_w = g_z.flatten(0, -2).T @ x.flatten(0, -2)
        g_b = g_z.flatten(0, -2).sum(0)
    else:
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
            x, padding = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode), 0
        else:
            padding = layer.padding
        g_w = torch.nn.grad.conv2d_weight(x, layer.weight.shape, g_z, layer.stride, padding,
                                          layer.dilation, layer.groups)
        g_b = g_z.sum((0, 2, 3))
    return g_w, None if layer.bias is None else g_b


class BlockForwardGradient(Method):
    """Forward gradient descent on each block's loss (one block for a plain network),
    perturbing the weights (perturb='weights', FG-W) or the activities ('activities', FG-A).
    The step's draws come from a generator seeded with `seed`: same seed, same run."""
    name = "FG-A"

    def __init__(self, model, loss_fn, lr, perturb="activities", local=False, direction="normal", seed=0,
                 **kwargs):
        super().__init__(model, loss_fn, lr, **kwargs)
        if type(self) is BlockForwardGradient:   # the named subclasses below carry their own label
            self.name = ("local " if local else "") + ("FG-A" if perturb == "activities" else "FG-W")
        if self.compile:
            raise ValueError("compile= is not supported by the local and activity-perturbed methods: use compile=False")
        self.perturb = checks.choice("perturb", perturb, ("weights", "activities"))
        self.direction = check_direction(direction)
        if self.perturb == "activities" and self.direction not in ACTIVITY_DIRECTIONS:
            raise ValueError(f"activity perturbation draws independent components per example: direction must "
                             f"be one of {ACTIVITY_DIRECTIONS}, got {direction!r}")
        if self.perturb == "weights" and self.direction == "orthogonal":
            raise ValueError("direction 'orthogonal' needs K directions together: use 'fg' for it")
        try:
            self.ce_options = engine.cross_entropy_options(loss_fn)
        except engine.Unsupported:
            raise ValueError(f"local and activity-perturbed forward gradients need a cross-entropy loss_fn "
                             f"(F.cross_entropy or nn.CrossEntropyLoss, reduction 'mean' or 'sum'), got {loss_fn!r}; "
                             "for other losses use make_method('fg', ...)") from None
        self.local = local
        self.rules()   # refuse a model the engine cannot run exactly now, not at the first step
        self.seed = checks.seed("seed", seed)
        self.generator = make_generator(self.seed, self.params[0].device)

    def rules(self):
        """[(block's rules, head's rules)]; checked at build and at every step (fglib.engine.layers_of),
        so that a hook or layer the engine would skip is refused, never skipped."""
        try:
            engine._check_no_hooks(self.model, "model")
            return [(engine.layers_of(b, "block"), engine.layers_of(h, "head"))
                    for b, h in blocks_of(self.model, self.local)]
        except engine.Unsupported as err:
            raise ValueError(f"{err.reason} {self.name} runs on fglib's engine only: train this model with "
                             "make_method('fg', ..., engine='forward_ad') instead") from None

    def draw_activity(self, z):
        """u for one layer's output z: one component per example and unit."""
        return sample_direction(z, self.direction, self.generator)

    def draw_weights(self):
        """v over all parameters, one tensor per parameter."""
        return sample_directions(self.params, self.direction, self.generator)

    def _run(self, layers, h, dh, tangents, record):
        """(value, tangent) through `layers`; with activity perturbation, u is added to each
        Linear/Conv2d output's tangent and (layer, input, u) recorded."""
        for layer, rule in layers:
            dp = {n: tangents[id(p)] for n, p in layer.named_parameters(recurse=False) if id(p) in tangents}
            x = h   # kept for the weight rule of activity perturbation
            h, dh = rule(layer, [h, dh], dp)
            if self.perturb == "activities" and isinstance(layer, PERTURBED):
                u = self.draw_activity(h)
                dh = u if dh is None else dh + u
                record.append((layer, x, u))
        return h, dh

    @torch.no_grad()
    def fill_grad(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)   # _write sums into .grad where a weight is shared
        tangents = {}
        if self.perturb == "weights":
            v = self.draw_weights()
            tangents = {id(p): vi for p, vi in zip(self.params, v)}
        h = x
        rules = self.rules()
        uses = Counter(id(p) for block, head in rules for layer, _ in block + head for p in layer.parameters(recurse=False))
        for block, head in rules:
            record = []
            h, dh = self._run(block, h, None, tangents, record)   # the block's input is a constant
            logits, dlogits = self._run(head, h, dh, tangents, record)
            try:
                shares, d = engine.cross_entropy_terms(logits, dlogits, y, **self.ce_options)
            except engine.Unsupported as err:   # e.g. logits other than (B, C): no forward_ad to fall back on
                raise ValueError(f"{err.reason} {self.name} runs on fglib's engine only: train this model with "
                                 "make_method('fg', ...) instead") from None
            self._write(block + head, tangents, record, d, uses)
        return shares.sum()

    def _write(self, layers, tangents, record, d, uses):
        """.grad of the block's parameters: d v for weight perturbation (d = sum_i d_i, the
        loss's tangent), or from g_z = d_i u for activity perturbation, where d_i is example i's
        share of the loss's tangent (d_i / B for the plain mean). A weight's part of v becomes
        its gradient in place where no other block uses the weight (uses: id -> layers using it),
        so that the step never holds v and the gradient both."""
        if self.perturb == "weights":
            for layer, _ in layers:
                for p in layer.parameters(recurse=False):
                    if id(p) in tangents:   # frozen parameters (requires_grad=False) are not perturbed
                        v = tangents[id(p)]
                        p.grad = v.mul_(d.sum()) if uses[id(p)] == 1 else d.sum() * v
            return
        for layer, x, u in record:   # a weight used by two layers sums both layers' shares
            g_w, g_b = weight_grads(layer, x, u * d.view(-1, *[1] * (u.dim() - 1)))
            for p, g in ((layer.weight, g_w), (layer.bias, g_b)):
                if p is not None and p.requires_grad:
                    p.grad = g if p.grad is None else p.grad + g


class LocalBackprop(Method):
    """Backprop through each block's own loss only: one backward pass of sum_b L_b, whose
    blocks are cut apart (each block's input detached), so block b's gradient is that of L_b."""
    name = "local backprop"
    random = False

    def __init__(self, model, loss_fn, lr, **kwargs):
        super().__init__(model, loss_fn, lr, **kwargs)
        blocks_of(model, local=True)
        if self.compile:
            raise ValueError("compile= is not supported by local backprop: use compile=False")

    def fill_grad(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        losses = [self.loss_fn(logits, y) for logits in self.model.local_logits(x)]
        sum(losses).backward()
        return losses[-1].detach()


class ActivityForwardGradient(BlockForwardGradient):
    """FG-A on the whole network (a plain nn.Sequential)."""
    name = "FG-A"

    def __init__(self, model, loss_fn, lr, **kwargs):
        super().__init__(model, loss_fn, lr, perturb="activities", local=False, **kwargs)


class LocalForwardGradient(BlockForwardGradient):
    """FG-W per block of a LocalNet, each block on its own loss."""
    name = "local FG-W"

    def __init__(self, model, loss_fn, lr, **kwargs):
        super().__init__(model, loss_fn, lr, perturb="weights", local=True, **kwargs)


class LocalActivityForwardGradient(BlockForwardGradient):
    """FG-A per block of a LocalNet, each block on its own loss."""
    name = "local FG-A"

    def __init__(self, model, loss_fn, lr, **kwargs):
        super().__init__(model, loss_fn, lr, perturb="activities", local=True, **kwargs)
