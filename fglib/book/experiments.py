"""One call per experiment of the paper: both methods, several seeded runs.

Run r uses seed `seed + r` for everything random: the model's initial weights
(the same for both methods), the order of the mini-batches (the same for both
methods) and the forward gradient's directions.
"""
import contextlib

import pandas as pd
import torch
import torch.nn.functional as F

from .. import checks
from ..device import device_name
from ..forward_grad import jvp
from ..functions import PointModel, get_function, value_loss
from ..measure import base_call, peak_memory, peak_tensor_bytes, runtime_ratios, saved_bytes, step_memory
from ..registry import LABELS, METHODS, make_method
from ..models import MODELS, build_model
from ..timing import keep_freed_memory, timed_rounds
from ..train import evaluate, progress_bar, train


def _common(lr, runs, iterations, seed, methods):
    """The arguments every experiment shares, checked before any work starts."""
    if isinstance(methods, str) or not methods:
        raise TypeError(f"methods must be a non-empty tuple of 'fg' and/or 'bp', got {methods!r}")
    for m in methods:
        checks.choice("methods", m, METHODS)
    return (checks.rate("lr", lr), checks.count("runs", runs), checks.count("iterations", iterations),
            checks.seed("seed", seed))


def run_function(name, lr, runs=10, iterations=1000, seed=0, methods=("fg", "bp"),
                 progress=False, **method_kwargs):
    """Optimise a test function from its start point; rows carry the point (x, y).

    A run whose loss becomes NaN or infinite stops there and is kept: its rows end early and
    its `diverged` column is True, so a chapter can count and show the runs that diverged."""
    tf = get_function(name)
    lr, runs, iterations, seed = _common(lr, runs, iterations, seed, methods)
    curves = []
    for r in range(runs):
        for m in methods:
            model = PointModel(tf.f, tf.start)
            method = make_method(m, model, value_loss, lr, seed=seed + r, decay=0.0, **method_kwargs)
            point = lambda model: dict(zip("xy", model.theta.tolist()))
            df = train(method, None, iterations, seed=seed + r, progress=progress, record=point,
                       on_diverge="stop")
            curves.append(df.assign(method=LABELS[m], run=r, diverged=df.attrs["diverged_at"] is not None))
    return pd.concat(curves, ignore_index=True)


def run_training(model_name, data, lr, runs=5, iterations=1000, batch_size=64, eval_every=100,
                 seed=0, methods=("fg", "bp"), device="cpu", progress=True, model_kwargs=None,
                 eval_examples=None, eval_at=None, **method_kwargs):
    """Train each method `runs` times; return (curves, finals).

    curves: iteration, time, split, loss, method, run (train and validation rows).
    finals: method, run, test_loss, test_accuracy, validation_loss.
    """
    lr, runs, iterations, seed = _common(lr, runs, iterations, seed, methods)
    checks.choice("model_name", model_name, MODELS)
    checks.device("device", device)
    make_model = lambda s: build_model(model_name, seed=s, device=device, **(model_kwargs or {}))
    return train_methods(make_model, data, {LABELS[m]: (m, lr, method_kwargs) for m in methods}, runs,
                         iterations, batch_size, eval_every, seed, progress, eval_examples, eval_at)


def initial_gradients(model_name, data, seeds, n=2000, device="cpu"):
    """Each seed's network as training starts: its loss L(θ₀) and the norm ‖∇L(θ₀)‖ of its
    gradient on the first `n` training images (all of them if fewer). Under the decay the step
    sizes of the whole schedule add up to η₀/k, and a step moves the weights by η_i times the
    gradient, so a network whose loss starts flatter may not leave its starting loss in time:
    this says which seeds start steeper."""
    checks.choice("model_name", model_name, MODELS)
    checks.count("n", n)
    checks.device("device", device)
    x, y = data["train"].x[:n].to(device), data["train"].y[:n].to(device)
    rows = []
    for seed in seeds:
        model = build_model(model_name, seed=checks.seed("seeds", seed), device=device)
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
        rows.append({"seed": seed, "initial loss": loss.item(),
                     "initial gradient norm": torch.sqrt(sum(g.pow(2).sum() for g in grads)).item()})
    return pd.DataFrame(rows).set_index("seed")


def train_methods(make_model, data, methods, runs, iterations, batch_size=64, eval_every=100, seed=0,
                  progress=True, eval_examples=None, eval_at=None):
    """Train several methods `runs` times each on fresh models; return (curves, finals).

    make_model(seed) builds the model; methods maps a label to (make_method name, lr, keyword
    arguments), so one method can appear with different settings. Run r uses seed `seed + r`
    for the initial weights, the mini-batches and the directions, for every method alike."""
    curves, finals = [], []
    for r in range(runs):
        for label, (name, lr, kwargs) in methods.items():
            model = make_model(seed + r)
            method = make_method(name, model, F.cross_entropy, lr, seed=seed + r, **kwargs)
            df = train(method, data, iterations, batch_size, eval_every, seed=seed + r,
                       progress=progress, desc=f"{label}, run {r + 1}/{runs}",
                       eval_examples=eval_examples, eval_at=eval_at)
            curves.append(df.assign(method=label, run=r))
            test_loss, test_acc = evaluate(model, data["test"])
            val_loss, _ = evaluate(model, data["validation"])
            finals.append({"method": label, "run": r, "test_loss": test_loss,
                           "test_accuracy": test_acc, "validation_loss": val_loss})
    return pd.concat(curves, ignore_index=True), pd.DataFrame(finals)


def measure_runtime(model_name, data, runs=5, batch_size=64, lr=1e-6, seed=0, device="cpu",
                    warmup=5, repeats=30, model_kwargs=None):
    """Base runtime, R_f, R_b and memory of one step, for `runs` fresh models.

    Forward gradients are timed with fglib's engine (the fastest exact one, see the
    implementations chapter) and, beside it, with PyTorch's forward_ad. Returns one row per
    run: base (s), step times (s) of fg, fg_forward_ad and bp, R_f, R_f (forward_ad), R_b,
    R_f/R_b for both, peak CUDA memory of each step (NaN on CPU), peak tensor memory (any device)
    and bytes saved for backward. Freed memory stays in the process between calls
    (`keep_freed_memory`), as in the implementations chapter, so that no call pays page faults
    that another did not.
    """
    checks.choice("model_name", model_name, MODELS)
    keep_freed_memory()
    runs, batch_size, seed = checks.count("runs", runs), checks.count("batch_size", batch_size), checks.seed("seed", seed)
    checks.rate("lr", lr)
    rows = []
    for r in range(runs):
        g = torch.Generator().manual_seed(seed + r)
        idx = torch.randint(len(data["train"]), (batch_size,), generator=g).to(data["train"].y.device)
        x, y = data["train"].x[idx], data["train"].y[idx]
        model = build_model(model_name, seed=seed + r, device=device, **(model_kwargs or {}))
        methods = {"fg": make_method("fg", model, F.cross_entropy, lr, seed=seed + r, engine="fglib"),
                   "fg_forward_ad": make_method("fg", model, F.cross_entropy, lr, seed=seed + r, engine="forward_ad"),
                   "bp": make_method("bp", model, F.cross_entropy, lr)}
        t = runtime_ratios(model, methods, F.cross_entropy, x, y, warmup, repeats)
        row = {"run": r, "base": t["base"], "fg": t["fg"], "fg_forward_ad": t["fg_forward_ad"], "bp": t["bp"],
               "R_f": t["R_fg"], "R_f (forward_ad)": t["R_fg_forward_ad"], "R_b": t["R_bp"],
               "R_f/R_b": t["R_fg"] / t["R_bp"], "R_f/R_b (forward_ad)": t["R_fg_forward_ad"] / t["R_bp"]}
        for m, method in ((m, methods[m]) for m in ("fg", "bp")):
            step = lambda: method.step(x, y)
            row[f"peak_memory_{m}"] = peak_memory(step, device)
            row[f"peak_tensor_{m}"] = peak_tensor_bytes(step)
            row[f"saved_bytes_{m}"] = saved_bytes(step, exclude=list(model.parameters()))
        rows.append(row)
    return pd.DataFrame(rows)


FG_FORWARD_AD = "forward gradient (forward_ad)"   # the timing rounds' name of an FG step on PyTorch's forward_ad


@contextlib.contextmanager
def subnormals_flushed():
    """Run the body on one CPU thread with subnormal numbers flushed to zero (the processor's
    flush-to-zero mode is set per thread, so the intra-op threads would not inherit it);
    restores both afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def depth_rounds(data, depths, runs=10, batch_size=64, seed=0, device="cpu", warmup=5, repeats=30,
                 width=1024, progress=True, flush_subnormals=False, forward_ad=True):
    """Timing rounds of the depth-L MLP (no bias) at every depth, raw: one row per (depth, run,
    round, name) for the base call (forward and loss), a forward-gradient step on fglib's engine
    (and on PyTorch's forward_ad, if `forward_ad`), and a backprop step, interleaved
    (fglib.timing.timed_rounds). Run r at each depth has fresh weights and a fresh mini-batch
    (seed + r). `flush_subnormals` (CPU only): on one thread with subnormals flushed to zero
    (subnormals_flushed), so that a deep network whose activations underflow times the methods
    rather than the processor's slow path. Nothing is graded here: fglib.book.grading.depth_costs
    derives R_f, R_b and their ratio per depth."""
    depths = checks.counts("depths", depths)
    runs, batch_size, seed = checks.count("runs", runs), checks.count("batch_size", batch_size), checks.seed("seed", seed)
    if flush_subnormals and torch.device(device).type != "cpu":
        raise ValueError(f"flush_subnormals=True is for the CPU (device={device!r}): a GPU handles subnormal "
                         "numbers at full speed; time it with flush_subnormals=False")
    if not flush_subnormals:
        return _depth_rounds(data, depths, runs, batch_size, seed, device, warmup, repeats, width, progress, forward_ad)
    with subnormals_flushed():   # each row says where it ran: one thread, subnormals flushed
        rounds = _depth_rounds(data, depths, runs, batch_size, seed, device, warmup, repeats, width, progress,
                               forward_ad)
        return rounds.assign(device=device_name(device), threads=1, subnormals="flushed")


def _depth_rounds(data, depths, runs, batch_size, seed, device, warmup, repeats, width, progress, forward_ad):
    keep_freed_memory()
    out = []
    for depth in progress_bar(depths, desc="depths", disable=not progress):
        for r in range(runs):
            g = torch.Generator().manual_seed(seed + r)
            idx = torch.randint(len(data["train"]), (batch_size,), generator=g).to(data["train"].y.device)
            x, y = data["train"].x[idx], data["train"].y[idx]
            model = build_model("deep", seed=seed + r, device=device, depth=depth, width=width)
            steps = {LABELS["fg"]: make_method("fg", model, F.cross_entropy, 1e-9, seed=seed + r, engine="fglib"),
                     FG_FORWARD_AD: make_method("fg", model, F.cross_entropy, 1e-9, seed=seed + r, engine="forward_ad"),
                     LABELS["bp"]: make_method("bp", model, F.cross_entropy, 1e-9)}
            if not forward_ad:
                del steps[FG_FORWARD_AD]
            fns = {"base": base_call(model, F.cross_entropy, x, y),
                   **{name: (lambda m=m: m.step(x, y)) for name, m in steps.items()}}
            out.append(timed_rounds(fns, device, min(warmup, repeats), repeats).assign(depth=depth, run=r))
    return pd.concat(out, ignore_index=True)


def memory_by_batch(data, batch_sizes, depth=8, seed=0, device="cpu", width=1024):
    """Peak allocator memory (GPU), step memory in the paper's sense (any device: everything alive
    at the step's peak, weights included, fglib.measure.step_memory) and bytes saved for backward
    of one step of each method (forward gradient, backprop, and forward gradient in place),
    for the depth-`depth` MLP at each batch size. Batch sizes beyond the training set are
    made by repeating images."""
    batch_sizes = checks.counts("batch_sizes", batch_sizes)
    rows = []
    models = {m: build_model("deep", seed=seed, device=device, depth=depth, width=width) for m in ("fg", "bp", "fg_inplace")}
    # each method on its own copy of the weights: a buffer one method leaves (fg's .grad) is not another's
    methods = {m: make_method(m, model, F.cross_entropy, 1e-9, seed=seed) for m, model in models.items()}
    param_bytes = sum(p.numel() * p.element_size() for p in models["bp"].parameters())
    for b in batch_sizes:
        idx = torch.arange(b, device=data["train"].y.device) % len(data["train"])
        x, y = data["train"].x[idx], data["train"].y[idx]
        for m, method in methods.items():
            step = lambda: method.step(x, y)
            step()  # allocate .grad and the optimiser's state before measuring
            memory = step_memory(models[m], step, method.optimizer, device)
            rows.append({"batch size": b, "method": LABELS[m], "peak memory": memory["allocator peak"],
                         "step memory": memory["total"],
                         "saved for backward": saved_bytes(step, exclude=list(models[m].parameters())),
                         "parameters": param_bytes})
    return pd.DataFrame(rows)


def function_summary(results):
    """For run_function's results {name: curves}: one row per (function, method) with the time
    per iteration (µs), the final loss (median and worst converged run) and the median final distance to
    the function's minimum, over the runs that did not diverge (NaN when none finished), and
    how many runs diverged."""
    rows = []
    for name, curves in results.items():
        minimum = torch.tensor(get_function(name).minimum, dtype=torch.float64)
        for method, runs in curves.groupby("method"):
            diverged = runs.groupby("run")["diverged"].first() if "diverged" in runs else pd.Series(False)
            train = runs[(runs["split"] == "train") & ~runs["run"].isin(diverged[diverged].index)]
            last = train[train["iteration"] == train["iteration"].max()]
            points = torch.tensor(last[["x", "y"]].to_numpy(), dtype=torch.float64).reshape(-1, 2)
            rows.append({"function": name, "method": method,
                         "time per iteration (µs)": 1e6 * last["time"].median() / last["iteration"].iloc[0]
                         if len(last) else float("nan"),
                         "final loss, median": last["loss"].median(), "final loss, worst converged run": last["loss"].max(),
                         "distance to minimum, median": float((points - minimum).norm(dim=1).median())
                         if len(last) else float("nan"),
                         "runs that diverged": int(diverged.sum())})
    return pd.DataFrame(rows)


def function_raw(results, eval_points=400):
    """run_function's curves {name: curves} as the chapter saves them raw: one table with a
    `function` column, each run kept at the evaluation schedule (fglib.eval_schedule: log-spaced,
    and at most 2% of the run apart over its second half) and at its last iteration (a diverged
    run's too); the point (x, y), the loss and the cumulative time at each."""
    from ..to_target import eval_schedule
    parts = []
    for name, curves in results.items():
        keep = set(eval_schedule(int(curves["iteration"].max()), eval_points))
        last = curves.groupby(["method", "run"])["iteration"].transform("max")
        rows = curves[curves["iteration"].isin(keep) | (curves["iteration"] == last)]
        parts.append(rows.drop(columns="accuracy", errors="ignore").assign(function=name))
    return pd.concat(parts, ignore_index=True)


def jvp_op_rounds(device, repeats=2000, warmup=50):
    """Timed rounds (timing.timed_rounds: every repeat, its load, whether it was disturbed) of
    one-operation JVPs under torch.autograd.forward_ad at Rosenbrock's start: a dual tensor with
    a plain constant (t + 100, t * 100, 100 * t) against two dual tensors (t * t)."""
    point = torch.tensor([-1.5, 2.0], dtype=torch.float64, device=device)
    direction = torch.tensor([0.6, 0.8], dtype=torch.float64, device=device)
    ops = {"t + 100": lambda t: t[0] + 100.0, "t * 100": lambda t: t[0] * 100.0,
           "100 * t": lambda t: 100.0 * t[0], "t * t": lambda t: t[0] * t[0]}
    return timed_rounds({name: (lambda f=f: jvp(f, point, direction)) for name, f in ops.items()},
                        device, warmup=warmup, repeats=repeats)


def subnormal_check(data, depth=100, width=1024, batch_size=64, seed=0, repeats=3):
    """Why a deep ReLU network without bias can time slowly on a CPU: under PyTorch's default
    initialisation each layer shrinks the activations (by about 1/sqrt(6) in scale), so that deep
    down they fall below float32's smallest normal number (about 1.2e-38) and become subnormal,
    which x86 processors handle tens of times more slowly; a GPU handles them at full speed.
    Returns the largest |activation| of the last hidden layer, float32's smallest normal, and the
    forward pass's median milliseconds on one thread with subnormals kept and flushed to zero
    (flushing applies to the calling thread only, hence one thread)."""
    import statistics
    import time
    model = build_model("deep", seed=seed, depth=depth, width=width)
    x = data["train"].x[:batch_size].cpu()
    threads, out = torch.get_num_threads(), {}
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            out["largest |activation|, last hidden layer"] = float(model[:-1](x).abs().max())
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                model(x)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - start)
                out[f"forward (ms), subnormals {'flushed' if flush else 'kept'}"] = 1e3 * statistics.median(times)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    out["smallest normal float32"] = float(torch.finfo(torch.float32).tiny)
    return out
