"""Two-dimensional test functions of Section 5.1, written for a tensor theta = (x, y).

    Beale       f = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2,  min at (3, 0.5)
    Rosenbrock  f = (a - x)^2 + b (y - x^2)^2,  a = 1, b = 100,                      min at (1, 1)

Both also accept a batch of points of shape (..., 2), which the contour plots use.
"""
from dataclasses import dataclass

import torch
from torch import nn

from . import checks


def beale(theta):
    """Beale's function, f(x, y) = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2,
    minimum 0 at (3, 0.5); theta[..., 0] is x, theta[..., 1] is y."""
    x, y = theta[..., 0], theta[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


def rosenbrock(theta, a=1.0, b=100.0):
    """Rosenbrock's function, f(x, y) = (a - x)^2 + b (y - x^2)^2, minimum 0 at (a, a^2) at the
    bottom of a long curved valley; theta[..., 0] is x, theta[..., 1] is y."""
    x, y = theta[..., 0], theta[..., 1]
    return (a - x) ** 2 + b * (y - x ** 2) ** 2


@dataclass(frozen=True)
class TestFunction:
    """A test function with its minimum, our start point and the plotting window."""
    f: object
    minimum: tuple
    start: tuple
    xlim: tuple
    ylim: tuple


FUNCTIONS = {
    "beale": TestFunction(beale, (3.0, 0.5), (1.0, 1.5), (-1.0, 4.0), (-1.5, 2.0)),
    "rosenbrock": TestFunction(rosenbrock, (1.0, 1.0), (-1.5, 2.0), (-2.0, 2.0), (-1.0, 3.0)),
}


def get_function(name):
    """The TestFunction named `name` (one of FUNCTIONS: 'beale', 'rosenbrock'), with its minimum,
    the paper's start point and a plotting window."""
    checks.choice("name", name, FUNCTIONS)
    return FUNCTIONS[name]


class PointModel(nn.Module):
    """A test function as a model whose only parameter is the point theta, so that
    the training methods for networks apply to it unchanged (inputs are ignored)."""

    def __init__(self, f, start, dtype=torch.float64):
        super().__init__()
        self.f = f
        self.theta = nn.Parameter(torch.tensor(start, dtype=dtype))

    def forward(self, x=None):
        return self.f(self.theta)


def value_loss(output, target=None):
    """The loss of a PointModel is the function's value itself."""
    return output
