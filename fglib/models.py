"""The paper's models (Baydin et al. 2022, Sections 5.3-5.6), for 28x28 MNIST images.

    logreg  multinomial logistic regression: 784 -> 10                (7,850 parameters)
    mlp     784 -> 1024 -> 1024 -> 10, ReLU after the first two layers (1,863,690)
    cnn     4 conv 3x3 with 64 channels and ReLU, 2x2 max-pool after conv 2 and 4,
            linear 1024 with ReLU, linear 10
    deep    depth-L MLP of width 1024 without bias (Section 5.6)

Padding of the CNN: the paper does not state it. We use none ("valid"
convolutions): 28 -> 26 -> 24 -> pool 12 -> 10 -> 8 -> pool 4, so the flattened
size is 64*4*4 = 1024, the same width as the linear layer that follows.
"""
import torch
from torch import nn

from . import checks

IMAGE_PIXELS, N_CLASSES, WIDTH = 28 * 28, 10, 1024


def logistic_regression():
    return nn.Sequential(nn.Flatten(), nn.Linear(IMAGE_PIXELS, N_CLASSES))


def mlp(width=WIDTH):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(IMAGE_PIXELS, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, N_CLASSES),
    )


def cnn(channels=64, hidden=WIDTH):
    def conv(c_in):
        return [nn.Conv2d(c_in, channels, kernel_size=3), nn.ReLU()]
    return nn.Sequential(
        *conv(1), *conv(channels), nn.MaxPool2d(2),
        *conv(channels), *conv(channels), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * 4 * 4, hidden), nn.ReLU(),
        nn.Linear(hidden, N_CLASSES),
    )


def deep_mlp(depth, width=WIDTH):
    """`depth` hidden layers of `width` units (784 -> width, then depth-1 of width -> width),
    each followed by ReLU, then a linear read-out to 10 classes; no biases anywhere."""
    depth, width = checks.count("depth", depth), checks.count("width", width)
    layers = [nn.Flatten(), nn.Linear(IMAGE_PIXELS, width, bias=False), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width, bias=False), nn.ReLU()]
    layers.append(nn.Linear(width, N_CLASSES, bias=False))
    return nn.Sequential(*layers)


MODELS = {"logreg": logistic_regression, "mlp": mlp, "cnn": cnn, "deep": deep_mlp}


def build_model(name, seed=None, device="cpu", dtype=None, **kwargs):
    """A fresh model by name; `seed` fixes its initial weights."""
    checks.choice("name", name, MODELS)
    checks.device("device", device)
    checks.floating_dtype("dtype", dtype)
    if seed is not None:
        torch.manual_seed(checks.seed("seed", seed))
    model = MODELS[name](**kwargs)
    return model.to(device=device, dtype=dtype)


def count_parameters(model):
    """The number of parameters (trainable or not) of a torch.nn.Module."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {model!r}")
    return sum(p.numel() for p in model.parameters())
