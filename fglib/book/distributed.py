"""The distributed chapter: torchrun launches of fglib.distributed, and a model on paper of a
data-parallel step's time.

Ring all-reduce of m bytes over W workers (each sends and receives 2 (W - 1) / W of the data,
in 2 (W - 1) rounds), with per-message latency alpha and bandwidth beta:

    t_allreduce(m) = 2 (W - 1) alpha + 2 (W - 1) / W * m / beta

Ring all-gather of m bytes per worker: (W - 1) alpha + (W - 1) m / beta. A data-parallel step
costs its compute on a shard, ideally S(1) / W, plus its communication. Backprop all-reduces
the gradient (m = 4 n bytes in float32); shared-direction forward gradients all-reduce K + 1
numbers, so their step is latency-bound. Over a whole run, T_f / T_b = (I_f / I_b) (S_f / S_b).
"""
import os
import pathlib
import subprocess
import sys
import tempfile

import pandas as pd
import torch


FLOAT_BYTES = 4
# fglib.distributed's method names as a reader reads them
METHOD_WORDS = {"fg-shared": "FG, shared direction", "fg-independent": "FG, independent directions",
                "bp": "backprop (DDP)"}


def launch(world, model="mlp", methods=("fg-shared", "fg-independent", "bp"), iterations=100, batch_size=64,
           lr=1e-4, lr_bp=1e-2, seed=0, limit=5000, timeout=600):
    """Train each method with `world` gloo workers on the CPU under torchrun (the cores shared
    out among them); returns {method: results saved by rank 0}."""
    threads = max(1, (os.cpu_count() or 1) // world)
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "-m", "fglib.distributed", "--model", model, "--methods", ",".join(methods),
               "--iterations", str(iterations), "--batch-size", str(batch_size), "--lr", str(lr),
               "--lr-bp", str(lr_bp), "--seed", str(seed), "--limit", str(limit), "--out", out, "--device", "cpu"]
        done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"torchrun with {world} workers failed:\n{done.stderr[-3000:]}")
        return {m: torch.load(pathlib.Path(out) / f"{m}.pt", weights_only=True) for m in methods}


def step_rows(runs):
    """runs: {world: launch(...)} -> raw: one row per (method, world, step) with the step's
    seconds on rank 0, the bytes each worker handed to the collectives per step, and the
    parameters."""
    return pd.DataFrame([{"method": method, "workers": world, "step": i, "seconds": t,
                          "bytes sent per step": r["bytes_per_step"], "parameters": r["parameters"]}
                         for world, results in runs.items() for method, r in results.items()
                         for i, t in enumerate(r["step_times"])])


def measured_table(steps):
    """step_rows' rows -> one row per (method, world): bytes each worker handed to the
    collectives per step, the parameters, the gradient's bytes, and the median step time."""
    g = steps.groupby(["method", "workers"], sort=False)
    out = g[["bytes sent per step", "parameters"]].first().reset_index()
    return out.assign(**{"gradient (bytes)": FLOAT_BYTES * out["parameters"],
                         "step time (ms)": 1e3 * g["seconds"].median().to_numpy()})


def ring_allreduce(nbytes, world, bandwidth, latency):
    """Seconds for a ring all-reduce of `nbytes` (bandwidth in bytes/s, latency in s)."""
    return 0.0 if world == 1 else 2 * (world - 1) * latency + 2 * (world - 1) / world * nbytes / bandwidth


def modelled_step(compute_one, nbytes, world, bandwidth, latency, replicated=0.0):
    """A data-parallel step of `world` workers: the part of one worker's compute that scales with
    its shard of the batch (1 - replicated), divided among the workers (ideal scaling), the part
    every worker repeats whole (`replicated`, a share of compute_one: for forward gradients drawing
    v, forming g and updating all n weights; for backprop the update), and the all-reduce of `nbytes`:

        S(W) = S(1) ((1 - r) / W + r) + allreduce(nbytes, W)
    """
    if not 0.0 <= replicated <= 1.0:
        raise ValueError(f"replicated must be a share of the step between 0 and 1, got {replicated!r}")
    return compute_one * ((1 - replicated) / world + replicated) + ring_allreduce(nbytes, world, bandwidth, latency)


def step_ratio(s_f, s_b, n, world, bandwidth, latency, k=1, replicated_f=0.0, replicated_b=0.0):
    """Modelled S_f / S_b at `world` workers: forward gradients all-reduce K + 1 numbers,
    backprop the n-float gradient and its loss; each repeats its `replicated` share on every worker."""
    fg = modelled_step(s_f, FLOAT_BYTES * (k + 1), world, bandwidth, latency, replicated_f)
    bp = modelled_step(s_b, FLOAT_BYTES * (n + 1), world, bandwidth, latency, replicated_b)
    return fg / bp


def break_even_bandwidth(ratio_at, low, high, steps=60):
    """The bandwidth in [low, high] at which a modelled step ratio `ratio_at(bandwidth)` is 1 (the
    two steps cost the same), found by bisection on the log of the bandwidth; NaN where the ratio
    stays on one side of 1 over the whole range."""
    import math
    side = lambda log_b: math.log(ratio_at(10.0 ** log_b))
    lo, hi = math.log10(low), math.log10(high)
    if side(lo) * side(hi) >= 0:
        return math.nan
    for _ in range(steps):
        middle = (lo + hi) / 2
        lo, hi = (middle, hi) if side(lo) * side(middle) > 0 else (lo, middle)
    return 10.0 ** lo


# The parts of a step (fglib.measure.step_parts, timed by the implementations chapter) that every
# worker repeats whole: they act on all n weights, not on the worker's shard of the batch.
REPLICATED_PARTS = {"forward gradient": ("forward gradient: draw v", "forward gradient: form g = d v",
                                         "both: SGD update"),
                    "backprop": ("both: SGD update",)}
DIVIDED_PARTS = {"forward gradient": ("forward gradient: forward-mode pass",),
                 "backprop": ("backprop: forward (recording) and backward",)}


def replicated_shares(breakdown, model):
    """{method: the share of its step that every worker repeats} from the raw step breakdown
    (the implementations chapter's breakdown-rounds: median seconds of each part over the quiet
    rounds of `model`)."""
    from ..timing import quiet
    rows = breakdown[breakdown["model"] == model]
    if rows.empty:
        raise ValueError(f"the step breakdown has no rounds of model {model!r}: run the implementations chapter")
    median = quiet(rows).groupby("name")["seconds"].median()
    out = {}
    for method in REPLICATED_PARTS:
        rep = sum(median[p] for p in REPLICATED_PARTS[method])
        out[method] = float(rep / (rep + sum(median[p] for p in DIVIDED_PARTS[method])))
    return out
