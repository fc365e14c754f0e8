"""The paper's models (Baydin et al. 2022, Sections 5.3-5.6), for 28x28 MNIST images.

    logreg  multinomial logistic regression: 784 -> 10                (7,850 parameters)
    mlp     784 -> 1024 -> 1024 -> 10, ReLU after the first two layers (1,863,690)
    cnn     4 conv 3x3 with 64 channels and ReLU, 2x2 max-pool after conv 2 and 4,
            linear 1024 with ReLU, linear 10
    deep    depth-L MLP of width 1024 without bias (Section 5.6)
    local_mlp, local_cnn   the MLP and the CNN cut into blocks, each block with its own
            classifier head (Ren et al. 2023's local losses; see LocalNet)

Padding of the CNN: the paper does not state it. We use none ("valid"
convolutions): 28 -> 26 -> 24 -> pool 12 -> 10 -> 8 -> pool 4, so the flattened
size is 64*4*4 = 1024, the same width as the linear layer that follows.
"""
from __future__ import annotations

import torch
from torch import nn

from . import checks
from .device import resolve_device

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


class LocalNet(nn.Module):
    """A network cut into blocks B_1..B_m, block b with a classifier head H_b (Ren, Kornblith,
    Liao and Hinton 2023). With h_0 = x and h_b = B_b(sg(h_{b-1})), sg stopping the gradient,
    block b's local loss is L_b = CE(H_b(h_b), y); the last block ends in the network's own
    output layer and has an empty head, so L_m is the network's loss. Each block's parameters
    (and its head's) follow the gradient of their own L_b only. The network predicts with
    its last block's output: forward(x) = B_m(...B_1(x)), the same function as the uncut net.
    """

    def __init__(self, blocks, heads):
        super().__init__()
        if len(blocks) != len(heads) or not blocks:
            raise ValueError(f"give one head per block (the last an empty nn.Sequential()); got "
                             f"{len(blocks)} blocks and {len(heads)} heads")
        self.blocks, self.heads = nn.ModuleList(blocks), nn.ModuleList(heads)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def local_logits(self, x):
        """Each block's head output H_b(h_b), the block's input detached from the one before."""
        out = []
        for block, head in zip(self.blocks, self.heads):
            x = block(x.detach())
            out.append(head(x))
        return out


def cut(model, after, make_head):
    """A LocalNet from an nn.Sequential: a block ends after each layer index in `after`;
    make_head(block) builds the head for every block but the last."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential, got {type(model).__name__}")
    ends = [checks.integer("after[i]", i, minimum=0, maximum=len(model) - 2) + 1 for i in after]
    if ends != sorted(set(ends)):
        raise ValueError(f"after must list increasing layer indices, got {list(after)}")
    bounds = [0, *ends, len(model)]
    blocks = [model[a:b] for a, b in zip(bounds, bounds[1:])]
    return LocalNet(blocks, [make_head(b) for b in blocks[:-1]] + [nn.Sequential()])


def linear_head(block):
    """A linear classifier on a block's output features."""
    width = [m for m in block if isinstance(m, nn.Linear)][-1].out_features
    return nn.Sequential(nn.Linear(width, N_CLASSES))


def pooled_head(block):
    """Global average pooling over the image, then a linear classifier on the channels."""
    channels = [m for m in block if isinstance(m, nn.Conv2d)][-1].out_channels
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, N_CLASSES))


def local_mlp(width=WIDTH):
    """The paper's MLP with a head after each hidden layer: 3 blocks, 2 heads of 10,250
    parameters each. Built after the MLP from the same random stream, so the same seed gives
    the MLP's own initial weights."""
    return cut(mlp(width), after=[2, 4], make_head=linear_head)


def local_cnn(channels=64, hidden=WIDTH):
    """The paper's CNN cut after each pooling and after the hidden linear layer: 4 blocks,
    pooled heads on the two convolutional blocks, a linear head on the hidden layer."""
    trunk = cnn(channels, hidden)
    return cut(trunk, after=[4, 9, 12],
               make_head=lambda b: pooled_head(b) if any(isinstance(m, nn.Conv2d) for m in b) else linear_head(b))


MODELS = {"logreg": logistic_regression, "mlp": mlp, "cnn": cnn, "deep": deep_mlp,
          "local_mlp": local_mlp, "local_cnn": local_cnn}


def build_model(name: str, seed: int | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None, **kwargs) -> nn.Module:
    """A fresh model by name; `seed` fixes its initial weights."""
    checks.choice("name", name, MODELS)
    device = resolve_device(device)   # 'auto': the GPU when there is one
    checks.floating_dtype("dtype", dtype)
    if seed is not None:
        torch.manual_seed(checks.seed("seed", seed))
    model = MODELS[name](**kwargs)
    return model.to(device=device, dtype=dtype)


def count_parameters(model):
    """The number of parameters (trainable or not) of a torch.nn.Module."""
    checks.module("model", model)
    return sum(p.numel() for p in model.parameters())
