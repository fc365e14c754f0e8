"""The forward gradient, computed in one forward pass with forward-mode AD.

For f: R^n -> R and a direction v, forward mode evaluates f(theta) and the
directional derivative d = grad f(theta) . v = J_f(theta) v together, carrying a
tangent beside every value (dual numbers). The forward gradient is

    g(theta) = d * v,        E[g] = grad f(theta)

No backward pass and no autograd graph are involved: everything here works
under torch.no_grad() on tensors that do not require grad.

Three engines compute the same (f, d), exactly:

    forward_ad  PyTorch's dual tensors (torch.autograd.forward_ad) with functional_call
    func        torch.func.jvp with functional_call (what public ports such as orobix/fwdgrad use)
    fglib       fglib's own engine (fglib.engine): a value and tangent rule per layer, no autograd
    auto        fglib's engine when fglib.engine.check can tell it is exact for this model, these
                parameters and this loss (an nn.Sequential of the layers it knows, no hooks, a
                cross-entropy it implements; see fglib.engine.layers_of), else forward_ad

engine='fglib' on a model it cannot do exactly raises fglib.engine.Unsupported (a ValueError)
naming the layer or option; it never returns a wrong d.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from . import checks
from . import engine as fglib_engine
from .directions import sample_direction, sample_directions
from .substitute import call_with


@dataclass
class ForwardGradient:
    """loss = f(theta), d = grad f . v (a scalar), g = d v (one tensor per parameter)."""
    loss: torch.Tensor
    d: torch.Tensor
    g: object


ENGINES = ("auto", "fglib", "forward_ad", "func")


def check_engine(name):
    return checks.choice("engine", name, ENGINES)


def _scalar(primal, tangent):
    if primal.numel() != 1:
        raise ValueError(f"the loss must be a scalar, got shape {tuple(primal.shape)}; "
                         "reduce it (e.g. .mean() over the batch) first")
    if tangent is None:  # the output does not depend on the parameters
        tangent = torch.zeros_like(primal)
    return primal.reshape(()), tangent.reshape(())


def _scalar_value_and_tangent(out):
    return _scalar(*fwAD.unpack_dual(out))


def jvp(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, v: torch.Tensor,
        engine: str = "forward_ad") -> tuple[torch.Tensor, torch.Tensor]:
    """(f(theta), grad f(theta) . v) in one forward pass; f maps a tensor to a scalar.

    engine 'fglib' runs f on fglib's dual numbers (fglib.engine.Dual), and raises Unsupported if f
    uses an operation they have no rule for; 'auto' then uses forward_ad instead.
    """
    check_engine(engine)
    checks.floating_tensor("theta", theta)
    if not isinstance(v, torch.Tensor) or v.shape != theta.shape:
        raise ValueError(f"v must be a tensor of theta's shape {tuple(theta.shape)}, got "
                         f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    checks.same_place("theta", theta, v=v)
    if engine in ("fglib", "auto"):
        try:
            return _scalar(*fglib_engine.jvp(f, theta.detach(), v))
        except fglib_engine.Unsupported:
            if engine == "fglib":
                raise
        engine = "forward_ad"
    if engine == "func":
        with torch.no_grad():
            return _scalar(*torch.func.jvp(f, (theta.detach(),), (v,)))
    with torch.no_grad(), fwAD.dual_level():
        out = f(fwAD.make_dual(theta.detach(), v))
        return _scalar_value_and_tangent(out)


def forward_gradient(f, theta, v=None, kind="normal", generator=None, engine="forward_ad"):
    """The forward gradient of a function of one tensor (e.g. a test function)."""
    checks.floating_tensor("theta", theta)
    if v is None:
        v = sample_direction(theta, kind, generator)
    loss, d = jvp(f, theta, v, engine)
    return ForwardGradient(loss, d, d * v)


def check_directions(params, directions):
    """One direction per parameter, of its shape, device and dtype; otherwise a clear error
    (a short list would otherwise be silently cut by zip, and d would be wrong)."""
    directions = list(directions)
    if len(directions) != len(params):
        raise ValueError(f"directions has {len(directions)} tensors but there are {len(params)} "
                         "parameters to perturb; give one direction per parameter, in "
                         "model.parameters() order")
    for i, (p, v) in enumerate(zip(params, directions)):
        if v.shape != p.shape:
            raise ValueError(f"directions[{i}] has shape {tuple(v.shape)} but parameter {i} has shape "
                             f"{tuple(p.shape)}")
        checks.same_place(f"parameter {i}", p, **{f"directions[{i}]": v})
    return directions


def check_params(model, params):
    """Every tensor in params is a parameter of the model (else its tangent would be dropped and d
    silently miss its term)."""
    own = {id(p) for p in model.parameters()}
    for i, p in enumerate(params):
        if id(p) not in own:
            raise ValueError(f"params[{i}] (shape {tuple(p.shape)}) is not a parameter of the model: pass "
                             "tensors from model.parameters() (or leave params=None for all of them)")


def module_jvp(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
               directions: Sequence[torch.Tensor], params: Sequence[torch.Tensor] | None = None,
               engine: str = "auto", batch_fallback: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, grad loss . v) with respect to `params`, in one forward pass.

    `params` defaults to all of `model.parameters()` (forward mode needs no requires_grad);
    `directions` holds one tensor per parameter in `params`, in that order. Parameters of the
    model not in `params` are held constant (forward gradient descent passes only the
    parameters with requires_grad, as backprop would train). `engine`: see ENGINES above.
    With `batch_fallback` (the default for engine='auto'), a batch whose shapes fglib's engine does
    not take (fglib.engine.UnsupportedBatch: an unbatched image, logits other than (B, C)) goes to
    forward_ad; anything else the engine refuses, such as a hook added later, is still refused.
    """
    check_engine(engine)
    params = list(model.parameters()) if params is None else list(params)
    directions = check_directions(params, directions)
    check_params(model, params)
    if isinstance(x, torch.Tensor) and params:
        checks.same_place("the model's parameters", params[0], x=x)
    if engine == "auto":
        engine = "fglib" if fglib_engine.supports(model, loss_fn) else "forward_ad"
        batch_fallback = batch_fallback is not False
    if engine == "fglib" and batch_fallback:
        try:
            return _jvp_fglib(model, loss_fn, x, y, params, directions)
        except fglib_engine.UnsupportedBatch:   # this batch's shapes, e.g. an unbatched image: torch's own way
            engine = "forward_ad"
    run = {"fglib": _jvp_fglib, "func": _jvp_func, "forward_ad": _jvp_forward_ad}[engine]
    return run(model, loss_fn, x, y, params, directions)


def module_jvp_batched(model, loss_fn, x, y, directions, params=None, engine="auto", batch_fallback=None):
    """(loss, d) for K directions in one pass: `directions` is a list of K direction lists (as
    module_jvp takes one); d has shape (K,). The K tangents travel together through each layer
    (torch.func.vmap over module_jvp), so each weight is read once for all K."""
    directions = [check_directions(list(model.parameters()) if params is None else list(params), v)
                  for v in directions]
    if not directions:
        raise ValueError("directions must hold at least one direction list")
    stacked = [torch.stack(parts) for parts in zip(*directions)]
    one = lambda *v: module_jvp(model, loss_fn, x, y, list(v), params, engine, batch_fallback)
    loss, d = torch.func.vmap(one)(*stacked)
    return loss[0], d


def _jvp_fglib(model, loss_fn, x, y, params, directions):
    tangents = {id(p): v for p, v in zip(params, directions)}
    return _scalar(*fglib_engine.module_jvp(model, loss_fn, x, y, tangents))


def _jvp_forward_ad(model, loss_fn, x, y, params, directions):
    with torch.no_grad(), fwAD.dual_level():
        dual = {id(p): fwAD.make_dual(p.detach(), v) for p, v in zip(params, directions)}
        out = loss_fn(call_with(model, dual, (x,)), y)
        return _scalar_value_and_tangent(out)


def _jvp_func(model, loss_fn, x, y, params, directions):
    """torch.func.jvp over the perturbed parameters, the others kept as they are."""
    keys = [id(p) for p in params]

    def f(*values):
        return loss_fn(call_with(model, dict(zip(keys, values)), (x,)), y)

    with torch.no_grad():
        return _scalar(*torch.func.jvp(f, tuple(p.detach() for p in params), tuple(directions)))


def module_forward_gradient(model, loss_fn, x, y, kind="normal", generator=None, directions=None,
                            params=None, engine="auto"):
    """The forward gradient of loss_fn(model(x), y) with respect to `params` (default: all)."""
    params = list(model.parameters()) if params is None else list(params)
    if directions is None:
        directions = sample_directions(params, kind, generator)
    loss, d = module_jvp(model, loss_fn, x, y, directions, params, engine)
    return ForwardGradient(loss, d, [d * v for v in directions])
