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


def modelled_step(compute_one, nbytes, world, bandwidth, latency):
    """A data-parallel step: the compute of one worker's shard (ideal scaling) plus the
    all-reduce of `nbytes`."""
    return compute_one / world + ring_allreduce(nbytes, world, bandwidth, latency)


def step_ratio(s_f, s_b, n, world, bandwidth, latency, k=1):
    """Modelled S_f / S_b at `world` workers: forward gradients all-reduce K + 1 numbers,
    backprop the n-float gradient and its loss."""
    fg = modelled_step(s_f, FLOAT_BYTES * (k + 1), world, bandwidth, latency)
    bp = modelled_step(s_b, FLOAT_BYTES * (n + 1), world, bandwidth, latency)
    return fg / bp
