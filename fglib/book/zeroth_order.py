"""The zeroth-order chapter's experiments: the error of d_h against h on the MNIST models, the
cost of a step (time and memory) of each estimator, and a model that forward mode cannot
differentiate."""
import copy
import math

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..directions import make_generator, sample_directions
from ..forward_grad import module_jvp
from ..measure import base_call, cost_rounds
from ..registry import make_method
from ..models import build_model
from ..to_target import mean_ci
from ..zeroth_order import SCHEMES, finite_difference
from .sweep import iterations_to_targets

DTYPES = {"float32": torch.float32, "float64": torch.float64}
ONE_SIDED = {"forward": "one-sided"}   # the estimator's name on the page: "forward" would read as forward mode
STEP_METHODS = {"forward gradient": ("fg", {}), "finite difference": ("fd", {}),
                "finite difference, in place": ("fd_inplace", {}), "backprop": ("bp", {})}


def difference_errors(model, x, y, hs, n_directions=5, seed=0):
    """One row per (direction, dtype, estimator, h): |d_est - d| / |d|, with d the exact
    directional derivative in float64 (fglib's forward mode on a float64 copy of the model).
    The estimators: forward mode itself (no h) and the one-sided and central differences at
    every h, each computed in float32 and in float64 from the same weights and directions."""
    exact_model = copy.deepcopy(model).double()
    generator = make_generator(seed, x.device)
    rows = []
    for k in range(n_directions):
        v64 = sample_directions(list(exact_model.parameters()), "normal", generator)
        _, d = module_jvp(exact_model, F.cross_entropy, x.double(), y, v64)
        d = float(d)
        for label, dtype in DTYPES.items():
            m, v, xx = copy.deepcopy(model).to(dtype), [t.to(dtype) for t in v64], x.to(dtype)
            _, d_fm = module_jvp(m, F.cross_entropy, xx, y, v)
            rows.append({"direction": k, "dtype": label, "estimator": "forward mode", "h": math.nan,
                         "error": abs(float(d_fm) - d) / abs(d)})
            for scheme in SCHEMES:
                for h in hs:
                    _, d_h = finite_difference(m, F.cross_entropy, xx, y, v, h, scheme)
                    rows.append({"direction": k, "dtype": label, "estimator": f"{ONE_SIDED.get(scheme, scheme)} difference", "h": h,
                                 "error": abs(float(d_h) - d) / abs(d)})
    return pd.DataFrame(rows)


def best_h(errors):
    """For each (dtype, difference): the h with the lowest median error over directions, that
    error, and forward mode's median error in the same dtype."""
    med = errors.groupby(["dtype", "estimator", "h"], dropna=False)["error"].median().reset_index()
    exact = med[med["estimator"] == "forward mode"].set_index("dtype")["error"]
    rows = []
    for (dtype, estimator), d in med[med["estimator"] != "forward mode"].groupby(["dtype", "estimator"]):
        best = d.loc[d["error"].idxmin()]
        rows.append({"dtype": dtype, "estimator": estimator, "best h": best["h"],
                     "median relative error there": best["error"], "forward mode's error": exact[dtype]})
    return pd.DataFrame(rows)


def step_rounds(model_name, x, y, h, seed=0, warmup=5, repeats=30, device="cpu"):
    """What a step of each estimator, of backprop and of inference (forward and loss) costs on one
    model, raw (fglib.measure.cost_rounds): every timing round and each call's peak tensor memory,
    with `model` and the parameters' size beside them. grading.cost_table reads them."""
    model = build_model(model_name, seed=seed, device=device)
    methods = {label: make_method(name, model, F.cross_entropy, 1e-9, seed=seed,
                                  **({"h": h} if name.startswith("fd") else {}), **kw)
               for label, (name, kw) in STEP_METHODS.items()}
    calls = {"inference": base_call(model, F.cross_entropy, x, y)}
    calls.update({label: (lambda m=m: m.step(x, y)) for label, m in methods.items()})
    rounds, memory = cost_rounds(calls, device, warmup, repeats)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return rounds.assign(model=model_name), memory.assign(model=model_name, **{"parameters (MiB)": params / 2 ** 20})


def time_to_target(curves, finals, costs, target_loss):
    """One row per (model, method) of the training runs (curves and finals with a `model` column):
    runs that reached the validation loss `target_loss`, I (mean iterations, interpolated between
    evaluations, 95% half-width), the
    step time S from grading.cost_table, T = I x S when every run reached it, and the mean test accuracy (%)."""
    rows = []
    for model_name, c in curves.groupby("model", sort=False):
        reach = iterations_to_targets(c.assign(lr=0.0), {"loss": [target_loss]}, interpolate=True)
        step = costs[costs["model"] == model_name].set_index("method")["step time (ms)"]
        acc = finals[finals["model"] == model_name].groupby("method")["test_accuracy"].mean()
        for method, d in reach.groupby("method", sort=False):
            mean, half, n = mean_ci(d["iterations"].tolist())
            rows.append({"model": model_name, "method": method, "runs that reached": f"{n}/{len(d)}",
                         "I (iterations)": mean, "±95%": half, "S (ms)": step[method],
                         "T = I × S (s)": mean * step[method] / 1e3 if n == len(d) else math.nan,
                         "test accuracy (%)": 100 * acc[method]})
    return pd.DataFrame(rows)


class QuantizedLinear(nn.Linear):
    """y = x Q(W)^T + b with Q(W) = q round(W / q): weights on a grid of step q, as a model
    deployed in low precision computes. dQ/dW = 0 wherever it exists, so forward mode (and
    backprop) see no dependence on W at all; a finite difference with h |v| larger than q
    does."""

    def __init__(self, in_features, out_features, q):
        super().__init__(in_features, out_features)
        self.q = q

    def forward(self, x):
        return F.linear(x, torch.round(self.weight / self.q) * self.q, self.bias)


def quantized_logreg(seed, q, device="cpu"):
    """Logistic regression with weights on a grid of step q, from logreg's initial weights."""
    model = nn.Sequential(nn.Flatten(), QuantizedLinear(784, 10, q))
    model.load_state_dict(build_model("logreg", seed=seed).state_dict())
    return model.to(device)
