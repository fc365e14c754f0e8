"""Forward gradient descent and backpropagation behind one interface.

Both methods fill each parameter's `.grad` with a gradient and let a torch.optim
optimiser take the step, so plain SGD (the paper), momentum or Adam apply to
either. The paper's Algorithm 1 (forward gradient descent) is, per iteration t,

    v_t ~ p(v);  f_t, d_t = f(theta_t), grad f(theta_t) . v_t   (one forward-mode pass)
    theta_{t+1} = theta_t - eta_t d_t v_t

and its learning rate decays as eta_i = eta_0 exp(-i k) with k = 1e-4.

Both methods get the same update: torch.optim with foreach=True (one fused pass over all
parameters), so that neither carries overhead the other does not. `compile=True` runs each
method's derivative computation through torch.compile (eager against eager, compiled
against compiled); `compile="reduce-overhead"` also records it as a CUDA graph on a GPU
(one launch per step instead of one per kernel), and "max-autotune" searches kernels.
"""
import math

import torch

from . import checks
from .directions import (INDEPENDENT, blocked_direction, check_direction, make_generator, orthogonal_directions,
                         sample_directions)
from . import engine as fglib_engine
from .forward_grad import check_engine, module_jvp, module_jvp_batched
from .layerwise import LayerwiseJVP

PAPER_DECAY = 1e-4
# Each direction is one more forward-mode pass in every step: K = 10,000 is already 10,000
# passes a step, where backprop's exact gradient costs about three.
MAX_DIRECTIONS = 10_000
OPTIMIZERS = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "adam": torch.optim.Adam}


def learning_rate(i, lr0, decay=PAPER_DECAY):
    """eta_i = eta_0 exp(-i k)."""
    i, lr0 = checks.integer("i", i, minimum=0), checks.rate("lr0", lr0)
    decay = checks.real("decay", decay, minimum=0)
    return lr0 * math.exp(-i * decay)


def make_optimizer(params, name, lr):
    checks.choice("optimizer", name, OPTIMIZERS)
    extra = {"momentum": 0.9} if name == "momentum" else {}
    return OPTIMIZERS[name](params, lr=lr, foreach=True, **extra)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compile_mode(value):
    """compile=: False (eager), True (torch.compile's default mode) or one of its modes;
    returns None for eager, else the mode's name."""
    if isinstance(value, str):
        return checks.choice("compile", value, COMPILE_MODES)
    return "default" if checks.boolean("compile", value) else None


def check_batch(x):
    """An empty batch has no loss: backprop would step on NaN, fglib's engine on a loss of 0."""
    if isinstance(x, torch.Tensor) and x.dim() > 0 and len(x) == 0:
        raise ValueError("x is an empty batch (0 examples): a step needs at least one example")


class Method:
    """Shared part: optimiser with the exponential decay; `step(x, y)` returns the loss."""
    name = "method"

    def __init__(self, model, loss_fn, lr, decay=PAPER_DECAY, optimizer="sgd", compile=False):
        lr, decay = checks.rate("lr", lr), checks.real("decay", decay, minimum=0)
        checks.module("model", model, hint="; a test function f(theta) goes in fglib.PointModel(f, start)")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(output, target), such as F.cross_entropy, "
                            f"got {loss_fn!r}")
        self.compile = compile_mode(compile)
        self.lr, self.decay = lr, decay
        self.model, self.loss_fn = model, loss_fn
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model has no parameter with requires_grad=True: there is nothing to train")
        self.optimizer = make_optimizer(self.params, optimizer, lr)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, math.exp(-decay))

    def settings(self):
        """What makes this run this run, as plain values (a resumed checkpoint must match them):
        the class, the initial rate and its decay, the optimiser, and the method's own settings
        (direction law, K, seed, engine, ...): every public attribute that is a str, int, float or bool."""
        plain = {k: v for k, v in vars(self).items()
                 if not k.startswith("_") and isinstance(v, (str, int, float, bool))}
        return {"class": type(self).__name__, "optimizer": type(self.optimizer).__name__, **plain}

    def state_dict(self):
        """What a stopped run needs to go on bit for bit: the optimiser's and the schedule's state,
        and the state of every random generator the method holds (its seeds and directions)."""
        generators = {name: g.get_state() for name, g in vars(self).items() if isinstance(g, torch.Generator)}
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "generators": generators}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for name, g_state in state["generators"].items():
            getattr(self, name).set_state(g_state)

    def step(self, x=None, y=None):
        check_batch(x)
        loss = self.fill_grad(x, y)
        self.optimizer.step()
        self.scheduler.step()
        return loss

    def fill_grad(self, x, y):
        raise NotImplementedError

    @staticmethod
    def refuse_state(kwargs, doing, other, use):
        """The in-place steps (fglib.lean, fglib.zeroth_order) keep no optimiser state and run
        eagerly: refuse another optimiser or compile=True before building, naming what to use.
        `use` is formatted with the optimiser asked for."""
        if kwargs.get("optimizer", "sgd") != "sgd":
            raise ValueError(f"optimizer must be 'sgd' for {doing} (it keeps no state), got {kwargs['optimizer']!r}; "
                             f"use {use.format(optimizer=repr(kwargs['optimizer']))}")
        if kwargs.get("compile"):
            raise ValueError(f"compile=True is not supported by {doing}; use {other}")

    def decay_rate(self):
        """One step of the decay, for a step that updates in place with no optimizer.step() to
        follow: the rate the step used, multiplied by the schedule's factor."""
        for group in self.optimizer.param_groups:
            group["lr"] *= self.scheduler.gamma


class ForwardGradientDescent(Method):
    """Writes g = (1/K) sum_k (grad f . v_k) v_k into .grad: K forward-mode passes, no backward.

    Each direction v_k is drawn from its own step seed, itself drawn from `seed`: the seed (8
    bytes) is enough to re-create v_k anywhere. With regenerate=True the step keeps no copy of
    v between the forward-mode pass and the update: the update re-draws it from the seed
    (MeZO's trick; bit-identical). With draw='blocks' as well, on an nn.Sequential, the pass itself
    draws each layer's part of v as the layer runs (fglib.layerwise.LayerwiseJVP): v is held whole only
    while .grad is written, so the step holds no more than backprop does. `engine` picks the forward-mode implementation (see
    fglib.forward_grad.ENGINES). batched=True carries the K tangents through one pass
    (torch.func.vmap) instead of K passes. draw='flat' draws v over all parameters in one call;
    draw='blocks' draws it in blocks of whole rows, each from (step seed, tensor, block), as
    fg_inplace (fglib.lean) does, so that the two give the same weights.

    combine says how the K directional derivatives d_k = grad f . v_k make one step:
    'mean'     g = (1/K) sum_k d_k v_k, unbiased (the paper's estimator, averaged);
    'project'  g = V (V^T V)^{-1} d, the orthogonal projection of grad f onto the span of the K
               directions (Fluegel et al. 2025). Exact when the directions span the parameter
               space (K = n). For K < n and Gaussian directions, E[g] = (K/n) grad f: biased
               towards zero by K/n, with a smaller error than the mean's for the same K.
    """
    name = "forward gradient"

    def __init__(self, model, loss_fn, lr, direction="normal", n_directions=1, seed=0, engine="auto",
                 regenerate=False, batched=False, combine="mean", draw="flat", **kwargs):
        super().__init__(model, loss_fn, lr, **kwargs)
        self.combine = checks.choice("combine", combine, ("mean", "project"))
        self.direction = check_direction(direction)
        self.draw = checks.choice("draw", draw, ("flat", "blocks"))
        if self.draw == "blocks" and self.direction not in INDEPENDENT:
            raise ValueError(f"draw='blocks' draws v a block at a time, which keeps the law of v only for "
                             f"independent components: direction must be one of {INDEPENDENT}, got {direction!r}")
        self.n_directions = checks.count("n_directions", n_directions)
        if self.n_directions > MAX_DIRECTIONS:
            raise ValueError(f"n_directions must be ≤ {MAX_DIRECTIONS:,}, got {self.n_directions:,}: each direction is "
                             "one more forward-mode pass in every step, so the run would not end in useful time; "
                             "for the exact gradient use backprop (make_method('bp', ...))")
        self.engine = check_engine(engine)
        self._fallback = self.engine == "auto"   # a batch fglib's engine cannot take goes to forward_ad
        if self.engine == "auto":
            self.engine = "fglib" if fglib_engine.supports(model, loss_fn) else "forward_ad"
        elif self.engine == "fglib":
            fglib_engine.check(model, loss_fn)   # refuse now, not at the first step
        self.regenerate = checks.boolean("regenerate", regenerate)
        self.batched = checks.boolean("batched", batched)
        if self.regenerate and self.batched:
            raise ValueError("regenerate=True keeps no copy of v, but batched=True needs all K directions at "
                             "once: choose one")
        if self.regenerate and self.direction == "orthogonal":
            raise ValueError("regenerate=True needs directions drawn one at a time; 'orthogonal' draws all K "
                             "together (and must hold them to orthogonalise): use regenerate=False")
        if self.combine == "project" and (self.regenerate or self.batched):
            raise ValueError("combine='project' needs every direction at once to project onto their span: use "
                             "regenerate=False and batched=False with it")
        self.seed = checks.seed("seed", seed)
        self.seeds = torch.Generator().manual_seed(self.seed)
        self.generator = make_generator(0, self.params[0].device)
        self.last_seeds = []
        self._jvp = self._make_jvp()
        self._layerwise = self._make_layerwise()

    def _make_layerwise(self):
        """With regenerate=True and draw='blocks', the pass that draws each layer's part of v as the
        layer runs (fglib.layerwise.LayerwiseJVP), so that v is held whole only while .grad is written;
        None where it cannot run the model (not an nn.Sequential, a shared layer, a hook, compile)."""
        if not (self.regenerate and self.draw == "blocks") or self.compile or self.engine == "func":
            return None
        try:
            return LayerwiseJVP(self.model, self.loss_fn, self.params, self.direction, self.engine, self.generator,
                                blocked_linear=False)
        except ValueError:
            return None

    def _make_jvp(self):
        fallback = self._fallback and not self.compile

        def jvp(x, y, *v):
            return module_jvp(self.model, self.loss_fn, x, y, v, self.params, self.engine, fallback)
        return torch.compile(jvp, mode=self.compile) if self.compile else jvp

    def directions(self, step_seed):
        """v for one step seed: the same seed always gives the same v, bit for bit. For
        direction='orthogonal', the K orthogonal directions of that seed (a list of K)."""
        if self.draw == "blocks":   # as fg_inplace draws them (fglib.directions.blocked_direction)
            return [blocked_direction(p, i, step_seed, self.direction, self.generator)
                    for i, p in enumerate(self.params)]
        self.generator.manual_seed(step_seed)
        if self.direction == "orthogonal":
            return orthogonal_directions(self.params, self.n_directions, self.generator)
        return sample_directions(self.params, self.direction, self.generator)

    def _seeds(self):
        """The step's K step seeds (drawn all at once, before any direction)."""
        return [int(torch.randint(2 ** 62, (), generator=self.seeds)) for _ in range(self.n_directions)]

    def _draws(self):
        """(step seed, v) for the step's K directions: K seeds, or one seed for an orthogonal block."""
        if self.direction == "orthogonal":
            step_seed = int(torch.randint(2 ** 62, (), generator=self.seeds))
            return [(step_seed, v) for v in self.directions(step_seed)]
        return ((s, self.directions(s)) for s in self._seeds())

    def _regenerated_jvp(self, x, y, step_seed):
        """(loss, d) along the v of `step_seed`, with no copy of v kept after the pass: layer by layer
        where fglib.layerwise.LayerwiseJVP runs the model (v never whole), else v drawn whole and freed."""
        if self._layerwise is not None:
            try:
                return self._layerwise(x, y, step_seed)
            except fglib_engine.UnsupportedBatch:
                if not self._fallback:
                    raise
        return self._jvp(x, y, *self.directions(step_seed))

    def fill_grad(self, x, y):
        # last step's gradient goes before this step's v is drawn: v becomes the new gradient in
        # place (write_grad), so the step never holds two weight-sized buffers besides the weights
        self.optimizer.zero_grad(set_to_none=True)
        if self.batched:
            return self._fill_grad_batched(x, y)
        if self.combine == "project":
            return self._fill_grad_projected(x, y)
        self.last_seeds, losses = [], []

        def terms():
            if self.regenerate:
                for step_seed in self._seeds():
                    self.last_seeds.append(step_seed)
                    loss, d = self._regenerated_jvp(x, y, step_seed)
                    losses.append(loss)
                    yield d / self.n_directions, self.directions(step_seed)
                return
            for step_seed, v in self._draws():
                if step_seed not in self.last_seeds:
                    self.last_seeds.append(step_seed)
                loss, d = self._jvp(x, y, *v)
                losses.append(loss)
                yield d / self.n_directions, v

        self.write_grad(terms())
        return losses[-1]

    def _fill_grad_projected(self, x, y):
        """g = V w with (V^T V) w = d: the least-squares combination of the K directions that
        reproduces every measured directional derivative, i.e. grad f projected on their span."""
        draws = list(self._draws())
        self.last_seeds = list(dict.fromkeys(s for s, _ in draws))
        losses, ds = [], []
        for _, v in draws:
            loss, d = self._jvp(x, y, *v)
            losses.append(loss)
            ds.append(d)
        blocks = [torch.stack([v[i].flatten() for _, v in draws]).double() for i in range(len(self.params))]
        gram = sum(b @ b.T for b in blocks)   # V^T V, one parameter tensor at a time
        d = torch.stack([torch.as_tensor(t, dtype=torch.float64, device=gram.device) for t in ds])
        weights = torch.linalg.pinv(gram) @ d
        self.write_grad((weights[k].to(self.params[0].dtype), v) for k, (_, v) in enumerate(draws))
        return losses[-1]

    def write_grad(self, terms):
        """p.grad = sum of weight * v over the (weight, v) terms, each v scaled in place."""
        grads = None
        for weight, v in terms:
            torch._foreach_mul_(v, weight)
            grads = v if grads is None else torch._foreach_add(grads, v)
        for p, g in zip(self.params, grads):
            p.grad = g

    def _fill_grad_batched(self, x, y):
        """The K tangents in one pass (module_jvp_batched); g = (1/K) sum_k d_k v_k."""
        draws = list(self._draws())
        self.last_seeds = list(dict.fromkeys(s for s, _ in draws))
        directions = [v for _, v in draws]
        loss, d = module_jvp_batched(self.model, self.loss_fn, x, y, directions, self.params, self.engine,
                                     self._fallback)
        weights = d / len(directions)
        for i, p in enumerate(self.params):
            p.grad = torch.einsum("k,k...->...", weights, torch.stack([v[i] for v in directions]))
        return loss


class Backprop(Method):
    """Writes the exact gradient from one forward and one backward pass into .grad."""
    name = "backprop"
    random = False   # draws nothing: takes no seed

    def __init__(self, model, loss_fn, lr, **kwargs):
        super().__init__(model, loss_fn, lr, **kwargs)
        forward = lambda x, y: self.loss_fn(self.model(x), y)
        self._forward = torch.compile(forward, mode=self.compile) if self.compile else forward

    def fill_grad(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward(x, y)
        if loss.numel() != 1:
            raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
        loss.backward()
        return loss.detach()


class CheckpointedBackprop(Backprop):
    """Backprop with activation checkpointing (torch.utils.checkpoint): the model, an
    nn.Sequential, is cut into `segments` pieces; the forward pass keeps only each piece's input,
    and the backward pass recomputes each piece's activations when it needs them. The gradient
    is the same; the memory of the activations falls from about L layers' worth to about
    L / segments + segments, at the price of a second forward pass. The memory-matched baseline
    that later work compares forward gradients against."""
    name = "backprop, checkpointed"

    def __init__(self, model, loss_fn, lr, segments=None, **kwargs):
        if not isinstance(model, torch.nn.Sequential):
            raise TypeError(f"CheckpointedBackprop needs an nn.Sequential to cut into segments, got "
                            f"{type(model).__name__}: wrap the layers in nn.Sequential, or use make_method('bp', ...)")
        layers = len(model)
        self.segments = (checks.count("segments", segments) if segments is not None
                         else max(1, round(math.sqrt(layers))))
        if self.segments > layers:
            raise ValueError(f"segments must be at most the model's {layers} layers, got {self.segments}")
        super().__init__(model, loss_fn, lr, **kwargs)
        from torch.utils.checkpoint import checkpoint_sequential
        forward = lambda x, y: self.loss_fn(checkpoint_sequential(self.model, self.segments, x, use_reentrant=False), y)
        self._forward = torch.compile(forward, mode=self.compile) if self.compile else forward
