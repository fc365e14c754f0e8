"""Steps that hold no whole direction or gradient: fg_inplace, and bp_inplace beside it.

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

Backprop can drop its gradient buffer the same way: InPlaceBackprop (bp_inplace) applies plain SGD
to each weight as soon as its gradient is complete. It still stores the activations for its
backward pass, which forward mode does not.
"""
import torch

from . import checks
from .directions import INDEPENDENT, make_generator
from .forward_grad import check_engine
from .layerwise import LayerwiseJVP
from .methods import MAX_DIRECTIONS, Method, check_batch


class InPlaceForwardGradient(Method):
    """Forward gradient descent with plain SGD, in place: v is never held whole (see the module's
    docstring). Any nn.Sequential whose parameters each sit in one layer; fglib's engine where it
    runs the model exactly, else PyTorch's forward_ad, one layer at a time. The memory costs time:
    v is drawn twice, a block at a time, in many small operations, so a step is slower than
    make_method('fg', ...)'s (the book's implementations chapter times the two)."""
    name = "forward gradient, in place"

    def __init__(self, model, loss_fn, lr, direction="normal", n_directions=1, seed=0, engine="auto", **kwargs):
        self.refuse_state(kwargs, "the in-place step", "make_method('fg', ...)",
                          "make_method('fg', ..., optimizer={optimizer})")
        super().__init__(model, loss_fn, lr, **kwargs)
        self.direction = checks.choice("direction", direction, INDEPENDENT)
        self.n_directions = checks.integer("n_directions", n_directions, minimum=1, maximum=MAX_DIRECTIONS)
        engine = check_engine(engine)
        if engine == "func":
            raise ValueError("engine='func' differentiates the model whole; the in-place step runs it a layer at "
                             "a time: use engine='auto', 'fglib' or 'forward_ad'")
        self.seed = checks.seed("seed", seed)
        self.seeds = torch.Generator().manual_seed(self.seed)
        self.generator = make_generator(0, self.params[0].device)
        self.jvp = LayerwiseJVP(model, loss_fn, self.params, self.direction, engine, self.generator,
                                other="make_method('fg', ..., regenerate=True)")
        self.engine, self.layers = self.jvp.engine, self.jvp.layers
        self.last_seeds = []

    def direction_of(self, step_seed, p):
        """v's part for parameter p, whole (fglib.directions.blocked_direction)."""
        return self.jvp.direction_of(step_seed, p)

    def directional_derivative(self, x, y, step_seed):
        """(loss, d) with d = grad f . v for the v of `step_seed`, each layer's part drawn as it runs."""
        return self.jvp(x, y, step_seed)

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
                for rows, v in self.jvp.blocks_of(step_seed, p):
                    (p[rows] if p.dim() else p).add_(v.mul_(weight), alpha=-lr)
        self.decay_rate()
        return loss


class InPlaceBackprop(Method):
    """Backprop with plain SGD fused into the backward pass: each parameter is updated,
    theta_j -= eta grad_j, as soon as its gradient is complete (torch's
    register_post_accumulate_grad_hook), and that gradient is freed at once. The step never holds
    the whole gradient: at its peak, the weights, the activations backprop stores, and the
    gradients still being formed. The weights are bit for bit those of make_method('bp', ...)
    with plain SGD. The hooks live only during a step, so the model is left as it was."""
    name = "backprop, in place"
    random = False   # draws nothing: takes no seed

    def __init__(self, model, loss_fn, lr, **kwargs):
        self.refuse_state(kwargs, "the in-place step", "make_method('bp', ...)",
                          "make_method('bp', ..., optimizer={optimizer})")
        super().__init__(model, loss_fn, lr, **kwargs)

    def step(self, x=None, y=None):
        check_batch(x)
        lr = self.optimizer.param_groups[0]["lr"]

        @torch.no_grad()
        def update(p):   # as SGD would add -lr .grad, then the gradient goes
            p.add_(p.grad, alpha=-lr)
            p.grad = None

        self.optimizer.zero_grad(set_to_none=True)
        hooks = [p.register_post_accumulate_grad_hook(update) for p in self.params]
        try:
            loss = self.loss_fn(self.model(x), y)
            if loss.numel() != 1:
                raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
            loss.backward()
        finally:
            for hook in hooks:
                hook.remove()
        self.decay_rate()
        return loss.detach()
