"""Every training method by its short name: one table of name, label and class.

    name        label (the class's `name`)    class
    fg          forward gradient              methods.ForwardGradientDescent
    fg_inplace  forward gradient, in place    lean.InPlaceForwardGradient (plain SGD, v never held whole)
    bp          backprop                      methods.Backprop
    bp_ckpt     backprop, checkpointed        methods.CheckpointedBackprop
    bp_inplace  backprop, in place            lean.InPlaceBackprop (plain SGD fused into the backward pass)
    fd          finite difference             zeroth_order.FiniteDifferenceDescent (SPSA)
    fd_inplace  finite difference, in place   zeroth_order.InPlaceFiniteDifference (MeZO)
    fg_a        FG-A                          local.ActivityForwardGradient
    local_fg    local FG-W                    local.LocalForwardGradient
    local_fg_a  local FG-A                    local.LocalActivityForwardGradient
    local_bp    local backprop                local.LocalBackprop

The label is written once, as the class's `name` (what progress bars, errors and the book's
tables print). To add a method: write a fglib.methods.Method subclass with its `name` in its
module, then add one entry to METHODS below; make_method builds it by name. Nothing registers
itself on import.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from . import checks
from .lean import InPlaceBackprop, InPlaceForwardGradient
from .local import ActivityForwardGradient, LocalActivityForwardGradient, LocalBackprop, LocalForwardGradient
from .methods import Backprop, CheckpointedBackprop, ForwardGradientDescent, Method
from .zeroth_order import FiniteDifferenceDescent, InPlaceFiniteDifference

METHODS = {
    "fg": ForwardGradientDescent,
    "bp": Backprop,
    "bp_ckpt": CheckpointedBackprop,
    "bp_inplace": InPlaceBackprop,
    "fd": FiniteDifferenceDescent,
    "fd_inplace": InPlaceFiniteDifference,
    "fg_inplace": InPlaceForwardGradient,
    "fg_a": ActivityForwardGradient,
    "local_fg": LocalForwardGradient,
    "local_fg_a": LocalActivityForwardGradient,
    "local_bp": LocalBackprop,
}

LABELS = {name: cls.name for name, cls in METHODS.items()}   # derived: 'fg' -> 'forward gradient'


def label(name: str) -> str:
    """The label a method's results carry, e.g. 'forward gradient' for 'fg'."""
    return METHODS[checks.choice("name", name, METHODS)].name


def make_method(name: str, model: nn.Module, loss_fn: Callable, lr: float, seed: int = 0, **kwargs) -> Method:
    """The method `name` of METHODS on `model`, with learning rate `lr` and its own keyword
    arguments; `seed` fixes its random draws (methods that draw nothing take none)."""
    cls = METHODS[checks.choice("name", name, METHODS)]
    if not getattr(cls, "random", True):
        return cls(model, loss_fn, lr, **kwargs)
    return cls(model, loss_fn, lr, seed=seed, **kwargs)
