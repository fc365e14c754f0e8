"""The forward gradient, computed in one forward pass with forward-mode AD.

For f: R^n -> R and a direction v, forward mode evaluates f(theta) and the
directional derivative d = grad f(theta) . v = J_f(theta) v together, carrying a
tangent beside every value (dual numbers). The forward gradient is

    g(theta) = d * v,        E[g] = grad f(theta)

No backward pass and no autograd graph are involved: everything here works
under torch.no_grad() on tensors that do not require grad.
"""
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from .directions import sample_direction, sample_directions


@dataclass
class ForwardGradient:
    """loss = f(theta), d = grad f . v (a scalar), g = d v (one tensor per parameter)."""
    loss: torch.Tensor
    d: torch.Tensor
    g: object


def _scalar_value_and_tangent(out):
    primal, tangent = fwAD.unpack_dual(out)
    if primal.numel() != 1:
        raise ValueError(f"the loss must be a scalar, got shape {tuple(primal.shape)}; "
                         "reduce it (e.g. .mean() over the batch) first")
    if tangent is None:  # the output does not depend on the parameters
        tangent = torch.zeros_like(primal)
    return primal.reshape(()), tangent.reshape(())


def jvp(f, theta, v):
    """(f(theta), grad f(theta) . v) in one forward pass; f maps a tensor to a scalar."""
    with torch.no_grad(), fwAD.dual_level():
        out = f(fwAD.make_dual(theta.detach(), v))
        return _scalar_value_and_tangent(out)


def forward_gradient(f, theta, v=None, kind="normal", generator=None):
    """The forward gradient of a function of one tensor (e.g. a test function)."""
    if v is None:
        v = sample_direction(theta, kind, generator)
    loss, d = jvp(f, theta, v)
    return ForwardGradient(loss, d, d * v)


def module_jvp(model, loss_fn, x, y, directions):
    """(loss, grad loss . v) for all parameters of `model` at once, one forward pass.

    `directions` holds one tensor per parameter, in `model.parameters()` order.
    """
    with torch.no_grad(), fwAD.dual_level():
        dual = {name: fwAD.make_dual(p.detach(), v)
                for (name, p), v in zip(model.named_parameters(), directions)}
        out = loss_fn(functional_call(model, dual, (x,)), y)
        return _scalar_value_and_tangent(out)


def module_forward_gradient(model, loss_fn, x, y, kind="normal", generator=None, directions=None):
    """The forward gradient of loss_fn(model(x), y) with respect to every parameter."""
    params = list(model.parameters())
    if directions is None:
        directions = sample_directions(params, kind, generator)
    loss, d = module_jvp(model, loss_fn, x, y, directions)
    return ForwardGradient(loss, d, [d * v for v in directions])
