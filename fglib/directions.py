"""Random directions v for the forward gradient g = (grad f . v) v.

The estimator is unbiased when the components v_i are independent with zero
mean and unit variance (Baydin et al. 2022, Theorem 1). Two such laws:

    normal      v_i ~ N(0, 1)          (the paper's choice)
    rademacher  v_i = +1 or -1, p=1/2  (same mean and variance, lower E||g||^2)
"""
import torch

from . import checks

DIRECTIONS = ("normal", "rademacher")


def check_direction(kind, name="direction"):
    return checks.choice(name, kind, DIRECTIONS)


def check_generator(generator, like):
    """A generator must live on the device of the tensors it fills."""
    if generator is not None and generator.device.type != like.device.type:
        raise ValueError(f"generator is on {generator.device} but the parameters are on {like.device}; "
                         f"make it with fglib.make_generator(seed, {str(like.device)!r})")


def sample_direction(like, kind="normal", generator=None):
    """One direction with the shape, dtype and device of the tensor `like`.

    The generator must live on `like`'s device (see `make_generator`).
    """
    check_direction(kind, "kind")
    check_generator(generator, like)
    if kind == "normal":
        return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    v = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    return v.bernoulli_(0.5, generator=generator).mul_(2).sub_(1)


def sample_directions(tensors, kind="normal", generator=None):
    """One direction per tensor: together they form one v over all parameters."""
    return [sample_direction(t, kind, generator) for t in tensors]


def make_generator(seed, device="cpu"):
    """A seeded torch.Generator on `device`, so that directions are reproducible."""
    seed, device = checks.seed("seed", seed), checks.device("device", device)
    return torch.Generator(device=torch.device(device)).manual_seed(seed)
