"""Training in a random subspace of the weights: theta = theta_0 + P z, with z in R^d, d << n.

Li et al. (2018) measured the "intrinsic dimension" of a task as the smallest d at which training
z alone comes close to training every weight; Aghajanyan et al. (2021) found it small for
fine-tuning a pre-trained network. A forward gradient's error grows with the number of
coordinates it perturbs, (n + 1) ||grad f||^2 for normal directions, so a forward gradient of z
(d coordinates) should lose far less to backprop than one of theta.

P here is a sparse random projection (the hashing trick): coordinate i of theta moves with
coordinate b(i) of z, with a random sign s_i,

    theta_i = theta_0,i + s_i z_b(i),   so that   d loss / d z_j = sum over i with b(i) = j of s_i g_i,

where g = grad_theta loss: the gradient of z is P^T g, computed by either method through the
gather and the product. P costs one bucket index and one sign per weight (no n x d matrix), and
the same seed gives the same P.
"""
import torch
from torch import nn

from . import checks
from .substitute import call_with


class RandomSubspace(nn.Module):
    """`model` with its weights frozen at theta_0 and moved only along a random d-dimensional
    subspace: the one trainable parameter is z (zeros at the start, so the model starts as
    `model`). `dim` is d; `seed` fixes P."""

    def __init__(self, model, dim, seed=0):
        super().__init__()
        checks.module("model", model)
        self.model = model
        named = [(n, p) for n, p in model.named_parameters()]
        if not named:
            raise ValueError("model has no parameters to move in a subspace")
        n = sum(p.numel() for _, p in named)
        self.dim = checks.integer("dim", dim, minimum=1, maximum=n)
        for _, p in named:
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(checks.seed("seed", seed))
        device, dtype = named[0][1].device, named[0][1].dtype
        self.register_buffer("bucket", torch.randint(self.dim, (n,), generator=g).to(device))
        self.register_buffer("sign", (2 * torch.randint(2, (n,), generator=g) - 1).to(device, dtype))
        self.z = nn.Parameter(torch.zeros(self.dim, device=device, dtype=dtype))
        self.names = [name for name, _ in named]

    def weights(self):
        """{id(p): theta_0 + P z} for every parameter p of the inner model."""
        delta = self.sign * self.z[self.bucket]
        out, start = {}, 0
        for p in self.model.parameters():
            out[id(p)] = p + delta[start:start + p.numel()].view_as(p)
            start += p.numel()
        return out

    def forward(self, x):
        return call_with(self.model, self.weights(), (x,))
