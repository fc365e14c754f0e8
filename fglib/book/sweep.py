"""A learning-rate sweep for each method separately, and a comparison at each one's best rate.

The paper gave both methods the same learning rate. A fair second look tunes each
on its own: for every method and rate, a few seeded runs; the best rate of a method
is the one with the lowest mean final validation loss (a run that diverges counts
as infinitely bad); then both methods at their best rates are compared by the time
and the iterations they need to reach a common target validation loss.
"""
import math

import pandas as pd

from .. import checks
from .experiments import METHOD_NAMES, run_training


def lr_sweep(model_name, data, rates, runs=2, iterations=2000, eval_every=100, seed=0,
             device="cpu", progress=False, **kwargs):
    """rates: {'fg': [...], 'bp': [...]}. Returns (curves, finals) with an `lr` column;
    diverged runs appear in finals with validation_loss = inf and diverged = True."""
    if not isinstance(rates, dict) or not rates:
        raise TypeError(f"rates must be a dict {{'fg': [...], 'bp': [...]}}, got {rates!r}")
    rates = {checks.choice("rates key", m, METHOD_NAMES): checks.rates(f"rates[{m!r}]", r)
             for m, r in rates.items()}
    curves, finals = [], []
    for m, method_rates in rates.items():
        for lr in method_rates:
            try:
                c, f = run_training(model_name, data, lr, runs, iterations, eval_every=eval_every,
                                    seed=seed, methods=(m,), device=device, progress=progress, **kwargs)
                curves.append(c.assign(lr=lr))
                finals.append(f.assign(lr=lr, diverged=False))
            except FloatingPointError:
                finals.append(pd.DataFrame([{"method": METHOD_NAMES[m], "run": -1, "lr": lr,
                                             "validation_loss": math.inf, "test_accuracy": math.nan,
                                             "test_loss": math.inf, "diverged": True}]))
    return pd.concat(curves, ignore_index=True), pd.concat(finals, ignore_index=True)


def best_rates(finals):
    """{method: rate with the lowest mean final validation loss}."""
    mean = finals.groupby(["method", "lr"])["validation_loss"].mean()
    return {method: float(s.idxmin()[1]) for method, s in mean.groupby(level="method")}


def reach(curves, target):
    """Mean-over-runs validation curve of each (method, lr): first iteration and time at or
    below `target` (NaN when never reached)."""
    val = curves[curves["split"] == "validation"]
    rows = []
    for (method, lr), d in val.groupby(["method", "lr"]):
        mean = d.groupby("iteration")[["time", "loss"]].mean().sort_index()
        hit = mean[mean["loss"] <= target]
        rows.append({"method": method, "lr": lr,
                     "iterations to target": hit.index[0] if len(hit) else math.nan,
                     "time to target (s)": hit["time"].iloc[0] if len(hit) else math.nan,
                     "best validation loss": mean["loss"].min()})
    return pd.DataFrame(rows)


def compare_at_best(curves, finals):
    """Each method at its own best rate: iterations and time to the common target (the
    higher of the two methods' best mean validation losses, so both reach it) and accuracy."""
    best = best_rates(finals)
    table = reach(curves, math.inf)
    at_best = table[[table.loc[i, "lr"] == best[table.loc[i, "method"]] for i in table.index]]
    target = at_best["best validation loss"].max()
    out = reach(curves, target)
    out = out[[out.loc[i, "lr"] == best[out.loc[i, "method"]] for i in out.index]].set_index("method")
    acc = finals[~finals["diverged"]].groupby(["method", "lr"])["test_accuracy"].mean()
    out["test accuracy"] = [acc[(m, best[m])] for m in out.index]
    out["target validation loss"] = target
    return out
