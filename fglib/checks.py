"""Argument checks shared by every public function of fglib.

Each check takes the argument's name and value, returns the value (converted where
that loses nothing, e.g. a NumPy integer to int), and raises with a message that names
the argument, repeats the value given and says what is allowed:

    TypeError   the value has the wrong kind (a string or 2.5 where an integer belongs)
    ValueError  the value has the right kind but is out of range or unknown

A bool is never accepted as a number: `True` is an int in Python, but never a count.
"""
import math
import numbers

import torch


def _fail(error, name, value, allowed):
    raise error(f"{name} must be {allowed}, got {value!r}")


def integer(name, value, minimum=None, maximum=None):
    """An int (or NumPy integer) in [minimum, maximum]; 2.5, '3' and True are refused."""
    bounds = (f" ≥ {minimum}" if minimum is not None else "") + (
        f" and ≤ {maximum}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(TypeError, name, value, f"an integer{bounds}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _fail(ValueError, name, value, f"an integer{bounds}")
    return int(value)


def count(name, value):
    """A positive integer: a number of runs, iterations, repeats, directions, a size."""
    return integer(name, value, minimum=1)


def optional_count(name, value):
    """None, or a positive integer."""
    return None if value is None else count(name, value)


def seed(name, value):
    """A non-negative integer seed below 2**64 (a torch.Generator holds 64 bits)."""
    return integer(name, value, minimum=0, maximum=2 ** 64 - 1)


def real(name, value, minimum=None, positive=False):
    """A finite real number (int or float, not bool, not a string); positive if asked,
    else ≥ minimum when one is given."""
    allowed = "a positive finite number" if positive else (
        f"a finite number ≥ {minimum}" if minimum is not None else "a finite number")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(TypeError, name, value, allowed)
    if not math.isfinite(value) or (positive and not value > 0) or (
            minimum is not None and value < minimum):
        _fail(ValueError, name, value, allowed)
    return float(value)


def rate(name, value):
    """A learning rate (or a step h): a positive finite number."""
    return real(name, value, positive=True)


def choice(name, value, options):
    """One of `options` (the message lists them)."""
    if not isinstance(value, str) or value not in options:
        error = ValueError if isinstance(value, str) else TypeError
        _fail(error, name, value, f"one of {sorted(options)}")
    return value


def boolean(name, value):
    """True or False, not a truthy stand-in such as 1 or 'yes'."""
    if not isinstance(value, bool):
        _fail(TypeError, name, value, "True or False")
    return value


def device(name, value):
    """A torch device: 'cpu', 'cuda', 'cuda:1' or a torch.device."""
    if isinstance(value, torch.device):
        return value
    if not isinstance(value, str):
        _fail(TypeError, name, value, "a device such as 'cpu', 'cuda' or 'auto'")
    if value == "auto":
        return value
    try:
        torch.device(value)
    except RuntimeError:
        _fail(ValueError, name, value, "a device such as 'cpu', 'cuda' or 'cuda:0'")
    return value


def floating_dtype(name, value):
    """None (PyTorch's default) or a floating torch dtype."""
    if value is not None and not (isinstance(value, torch.dtype) and value.is_floating_point):
        _fail(TypeError, name, value, "a floating torch dtype such as torch.float32 or torch.float64")
    return value


def floating_tensor(name, value):
    """A tensor of a floating dtype: a point to differentiate at (forward mode needs one)."""
    if not isinstance(value, torch.Tensor):
        _fail(TypeError, name, value, "a floating-point tensor")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}; "
                        f"use e.g. {name}.to(torch.float32)")
    return value


def module(name, value, hint=""):
    """A torch.nn.Module (a network to train or measure); `hint` says what to do otherwise."""
    if not isinstance(value, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}{hint}")
    return value


def _list_of(name, values, check, what):
    """A non-empty list, each element passing `check` (named name[i] in errors)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        _fail(TypeError, name, values, f"a list of {what}")
    values = list(values)
    if not values:
        _fail(ValueError, name, values, f"a non-empty list of {what}")
    return [check(f"{name}[{i}]", v) for i, v in enumerate(values)]


def rates(name, values):
    """A non-empty list of learning rates."""
    return _list_of(name, values, rate, "positive numbers")


def counts(name, values):
    """A non-empty list of positive integers (e.g. depths or batch sizes)."""
    return _list_of(name, values, count, "positive integers")


def same_place(reference_name, reference, **tensors):
    """Every tensor shares `reference`'s device and dtype; the message names the one that differs.

    Integer tensors (labels) are checked for the device only.
    """
    for name, t in tensors.items():
        if t is None:
            continue
        if t.device != reference.device:
            raise ValueError(f"{name} is on {t.device} but {reference_name} is on {reference.device}; "
                             f"move them to one device (e.g. {name}.to({str(reference.device)!r}))")
        if t.is_floating_point() and t.dtype != reference.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but {reference_name} has {reference.dtype}; "
                             f"use one dtype (e.g. {name}.to({reference.dtype}))")
