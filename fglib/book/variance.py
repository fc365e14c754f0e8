"""The variance chapter's experiments: the forward gradient's error on the book's networks for
each direction law and K, beside the formulas, the cost of K directions per step, and whether
K directions pay for themselves in time to target.

With K directions per step, time to target decomposes as

    T(K) / T(1) = [K I(K) / I(1)] x [S(K) / (K S(1))]

The first factor is the directions drawn to reach the target, relative to K = 1: a property of
the optimisation (below 1 when averaging lets each direction count for more). The second is
what a step with K directions costs against K steps with one: a property of the engine and the
device (below 1 when one batched pass carries K tangents more cheaply than K passes)."""
import copy
import math

import pandas as pd
import torch.nn.functional as F

from .. import checks
from ..data import BatchSampler
from ..measure import base_call
from ..registry import make_method
from ..models import build_model
from ..stats import expected_squared_error, network_errors
from ..timing import quiet, timed_rounds
from .grading import k_label
from .sweep import at_best_rates, best_final_rates, lr_sweep


def trained_copy(model, data, steps, lr=0.1, seed=0, method="bp"):
    """A copy of `model` after `steps` steps of `method` (backprop, or 'local_bp' for a
    LocalNet; batch 64): a point part way through training, reached quickly."""
    model = copy.deepcopy(model)
    method, batches = make_method(method, model, F.cross_entropy, lr), BatchSampler(data["train"], 64, seed)
    for _ in range(steps):
        method.step(*next(batches))
    return model


def error_draws(points, x, y, laws, n_samples=50, seed=0):
    """points: {(model name, point label): model}. Raw: for each (model, point, law, K), every
    draw's squared error ||g - grad f||^2 on each parameter tensor (one row per draw and tensor,
    with the tensor's size), the draw's cosine with grad f, and ||grad f||^2. error_table
    summarises them."""
    rows = []
    for (name, point), model in points.items():
        sizes = {p_name: p.numel() for p_name, p in model.named_parameters()}
        for kind, k in laws:
            errors, norm2 = network_errors(model, F.cross_entropy, x, y, kind, n_samples, k, seed=seed)
            for draw, e in errors.reset_index(drop=True).iterrows():
                rows += [{"model": name, "point": point, "law": kind, "K": k, "draw": draw, "tensor": p_name,
                          "tensor parameters": size, "squared error": float(e[f"squared error, {p_name}"]),
                          "cosine": float(e["cosine"]), "‖∇f‖²": norm2} for p_name, size in sizes.items()]
    return pd.DataFrame(rows)


def error_table(draws):
    """error_draws summarised. One row per (model, point, law, K): the mean squared error of the
    forward gradient in units of ||grad f||^2 with its standard error, the formula's value, the
    mean cosine with the gradient and, for K = 1, sqrt(2 / (pi n)). And, for the normal law with
    K = 1, each tensor's share of the squared error beside its share of the parameters."""
    rows, shares = [], []
    for (name, point, kind, k), d in draws.groupby(["model", "point", "law", "K"], sort=False):
        per_draw = d.groupby("draw")
        total, norm2 = per_draw["squared error"].sum(), float(d["‖∇f‖²"].iloc[0])
        sizes = d.groupby("tensor", sort=False)["tensor parameters"].first()
        n = int(sizes.sum())
        rows.append({"model": name, "point": point, "law": kind, "K": k, "parameters": n,
                     "error / ‖∇f‖²": total.mean() / norm2,
                     "± (se)": total.std() / math.sqrt(len(total)) / norm2,
                     "formula": expected_squared_error(1.0, n, kind, k),
                     "cosine": per_draw["cosine"].first().mean(),
                     "sqrt(2/(pi n))": math.sqrt(2 / (math.pi * n)) if k == 1 else math.nan})
        if kind == "normal" and k == 1:
            by_tensor = d.groupby("tensor", sort=False)["squared error"].mean()
            shares += [{"model": name, "point": point, "tensor": t, "share of the error": e / total.mean(),
                        "share of the parameters": sizes[t] / n} for t, e in by_tensor.items()]
    return pd.DataFrame(rows), pd.DataFrame(shares)


PASSES = {False: "K passes", True: "one batched pass"}


def k_cost_rounds(model_name, x, y, ks, seed=0, warmup=3, repeats=10, device="cpu"):
    """Raw: every interleaved timing round of forward gradient descent with K directions, as K
    passes and as one batched pass, beside backprop's step and the base runtime; each row with
    its K and pass (none for backprop and the base). k_cost_table summarises them."""
    model = build_model(model_name, seed=seed, device=device)
    calls, keys = {"base": base_call(model, F.cross_entropy, x, y)}, {}
    bp = make_method("bp", copy.deepcopy(model), F.cross_entropy, 1e-9)
    calls["backprop"] = lambda: bp.step(x, y)
    for k in ks:
        for batched in (False, True):
            if k == 1 and batched:
                continue
            m = make_method("fg", copy.deepcopy(model), F.cross_entropy, 1e-9, seed=seed, n_directions=k,
                            batched=batched)
            name = f"K = {k}, {PASSES[batched]}"
            calls[name], keys[name] = (lambda m=m: m.step(x, y)), (k, PASSES[batched])
    rounds = timed_rounds(calls, device, warmup, repeats)
    return rounds.assign(K=rounds["name"].map(lambda n: keys.get(n, (None, None))[0]),
                         **{"pass": rounds["name"].map(lambda n: keys.get(n, (None, None))[1])})


def k_cost_table(rounds):
    """k_cost_rounds summarised by the medians over the quiet rounds: one row per (K, pass) with
    its step time and S / S_backprop; and backprop's median step in seconds."""
    med = quiet(rounds).groupby("name", sort=False)["seconds"].median()
    steps = rounds.dropna(subset=["K"]).drop_duplicates("name")
    table = pd.DataFrame([{"K": int(k), "pass": p, "step time (ms)": 1e3 * med[n], "S / S_backprop": med[n] / med["backprop"]}
                          for n, k, p in zip(steps["name"], steps["K"], steps["pass"])])   # in the order timed
    return table, float(med["backprop"])


def check_k_rates(name, value):
    """{K: [rates]}, e.g. {1: [1e-4, 3e-4], 4: [3e-4, 1e-3]}, in increasing K."""
    if not isinstance(value, dict) or not value:
        raise TypeError(f"{name} must be a dict {{K: [learning rates]}}, e.g. {{1: [1e-4], 4: [3e-4]}}, "
                        f"got {value!r}")
    return {checks.count(f"{name} key", k): checks.rates(f"{name}[{k!r}]", value[k]) for k in sorted(value)}


def k_sweep(model_name, data, k_rates, bp_rates, budget, runs, eval_points, seed=0, device="cpu",
            eval_examples=None):
    """Forward gradient descent with K directions per step, for each K of k_rates ({K: [rates]}),
    each swept on its own grid by lr_sweep's rule, for budget // K iterations: every K draws the
    same number of directions per run. Backprop runs `budget` iterations over bp_rates. Run r
    has seed seed + r throughout. Returns (curves, finals) labelled by k_label and 'backprop'."""
    k_rates = check_k_rates("k_rates", k_rates)
    budget = checks.count("budget", budget)
    if budget < max(k_rates):
        raise ValueError(f"budget ({budget} directions per run) must be at least the largest K ({max(k_rates)}), "
                         "so that every K runs at least one iteration")
    curves, finals = [], []
    for k, rates in k_rates.items():
        c, f = lr_sweep(model_name, data, {"fg": rates}, runs, budget // k, eval_points, seed, device,
                        eval_examples=eval_examples, n_directions=k)
        curves.append(c.assign(method=k_label(k), K=k))
        finals.append(f.assign(method=k_label(k), K=k))
    c, f = lr_sweep(model_name, data, {"bp": bp_rates}, runs, budget, eval_points, seed, device,
                    eval_examples=eval_examples)
    return pd.concat(curves + [c], ignore_index=True), pd.concat(finals + [f], ignore_index=True)


def k_step_ms(costs, bp_seconds):
    """{label: ms per step} from k_cost_table: for each K the faster of K passes and one batched pass
    (both compute the same estimate), and backprop's step."""
    fastest = costs.groupby("K")["step time (ms)"].min()
    return {**{k_label(k): float(ms) for k, ms in fastest.items()}, "backprop": 1e3 * bp_seconds}


def k_table(curves, finals, step_ms, target_loss, budget):
    """One row per K (and backprop) at its best rate (lowest final validation loss): test error,
    iterations I to the validation-loss target, S, and T = I x S against backprop's. How K
    compares with the smallest K is grading.k_pays's table, pair by pair."""
    best = best_final_rates(finals)
    ks = finals.groupby("method", sort=False)["K"].first()
    table = at_best_rates(curves, finals, best, step_ms, target_loss, budget, reference="backprop")
    table.insert(1, "K", table["method"].map(ks).values)
    table.insert(2, "at the grid's edge", best["at the grid's edge"].values)
    return table
