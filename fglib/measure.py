"""The paper's measures (Section 5.2) and memory.

    base runtime  one forward pass and the loss on a mini-batch, no derivatives, no update
    R_f, R_b      time of a full forward-gradient / backprop step, update included, / base
    T_b           time at which backprop's mean validation loss is lowest
    T_f           time at which forward gradient's mean validation loss first reaches it

Times come from fglib.timing: medians over quiet rounds after warm-up, the device
synchronised around each call, base, forward-gradient and backprop calls interleaved
in every round in a rotating order, so that a slow patch of the machine hits all alike.
"""
from __future__ import annotations

import numbers
import weakref
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from . import checks
from .device import synchronize
from .timing import median_times, timed_rounds


def base_call(model, loss_fn, x, y):
    """The base runtime's work: forward and loss, no derivatives."""
    def run():
        with torch.no_grad():
            loss_fn(model(x), y)
    return run


def runtime_ratios(model, methods, loss_fn, x, y, warmup=5, repeats=30):
    """Base runtime and R = step time / base for each method in `methods` ({name: Method}).

    Every method must train `model` itself (its steps change the weights; the
    learning rate is small enough that this does not change the cost).
    """
    if not (isinstance(methods, dict) and all(callable(getattr(m, "step", None)) for m in methods.values())):
        raise TypeError("methods must be a dict {name: method} of methods from fglib.make_method "
                        f"(each with .step(x, y)), got {methods!r}")
    device = next(model.parameters()).device
    fns = {"base": base_call(model, loss_fn, x, y)}
    fns.update({name: (lambda m=m: m.step(x, y)) for name, m in methods.items()})
    times = median_times(fns, device, warmup, repeats)
    out = {"base": times["base"]}
    for name in methods:
        out[name] = times[name]
        out[f"R_{name}"] = times[name] / times["base"]
    return out


def cost_rounds(calls, device, warmup=5, repeats=30):
    """What each call costs, raw: (rounds, memory). rounds: every interleaved timing round
    (fglib.timing.timed_rounds: round, name, seconds, other load, disturbed); memory: one row per
    call, its peak tensor memory in MiB (peak_tensor_bytes, one more call after the timing)."""
    import pandas as pd
    rounds = timed_rounds(calls, device, warmup, repeats)
    memory = pd.DataFrame([{"name": name, "peak memory (MiB)": peak_tensor_bytes(call) / 2 ** 20}
                           for name, call in calls.items()])
    return rounds, memory


def peak_memory(fn, device):
    """Peak bytes the CUDA allocator held while `fn` ran (NaN on CPU, where PyTorch
    keeps no allocator statistics; see `saved_bytes` for what we measure there)."""
    if torch.device(checks.device("device", device)).type != "cuda":
        return float("nan")
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return float(torch.cuda.max_memory_allocated(device))


class _TensorBytes(TorchDispatchMode):
    """Counts the bytes of every storage alive: the `held` ones it starts with, and every new
    storage an operation returns; each is taken off when it is freed (a weak reference's
    finalizer), as an allocator counts it. Keeps the peak of the running total."""

    def __init__(self, held=()):
        super().__init__()
        self.live, self.now = {}, 0
        for t in held:
            self._add(t.untyped_storage())
        self.peak = self.now

    def _add(self, storage):
        key = (storage.data_ptr(), storage.device)
        if key in self.live or storage.nbytes() == 0:
            return
        self.live[key] = storage.nbytes()
        self.now += storage.nbytes()
        weakref.finalize(storage, self._free, key)

    def _free(self, key):
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and not t._is_zerotensor()}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t._is_zerotensor():
                continue   # a zero tensor (forward mode's zero tangent) has no storage: it holds nothing
            if t.untyped_storage().data_ptr() not in inputs:   # not an in-place result or a view of an input
                self._add(t.untyped_storage())
                self.peak = max(self.peak, self.now)
        return out


def peak_tensor_bytes(fn: Callable[[], object], held: Callable[[], list] | None = None) -> int:
    """Peak bytes held at once by the tensors that `fn` creates, on any device: every PyTorch
    operation's new outputs are counted while they are alive (the activations, the tape, the
    directions, the gradients, temporaries). Memory that existed before (the parameters, the
    batch) is not counted, nor scratch space a kernel uses internally. On a GPU, compare with
    `peak_memory`, the CUDA allocator's own figure.

    `held`, a no-argument callable returning tensors that exist before `fn` runs (last step's
    gradients, the optimiser's state): these count too, from the start, until they are freed. A
    buffer that `fn` frees stops counting when it is freed, as the allocator counts it: a step
    that frees last step's gradient before making the next one holds one gradient, not two.
    (A callable, so that no reference kept here keeps a freed buffer alive.)"""
    if not callable(fn):
        raise TypeError(f"fn must be a no-argument callable (e.g. lambda: method.step(x, y)), got {fn!r}")
    if held is not None and not callable(held):
        raise TypeError(f"held must be a no-argument callable returning tensors (e.g. lambda: [p.grad for p in "
                        f"params]), got {held!r}")
    counter = _TensorBytes(held() if held is not None else ())
    with counter:
        fn()
    return counter.peak


def tensor_bytes(tensors):
    """Bytes of the distinct storages behind `tensors` (a tensor shared twice counts once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def held_tensors(params, optimizer=None):
    """The tensors a training step keeps between steps: the parameters' gradients and the
    optimiser's state (momentum, Adam's moments)."""
    state = [v for s in (optimizer.state.values() if optimizer is not None else ()) for v in s.values()
             if torch.is_tensor(v)]
    return [p.grad for p in params if p.grad is not None] + state


def step_memory(model: nn.Module, fn: Callable[[], object], optimizer: torch.optim.Optimizer | None = None,
                device: str | torch.device = "cpu") -> dict[str, float]:
    """One step's memory in the paper's sense, everything alive at the step's peak, weights
    included, as the device's allocator counts it:

        total = weights + max over the step of (held buffers still alive + the step's new tensors)

    {'weights': the parameters' bytes, 'held': the gradients and optimiser state alive before the
    step, 'step peak': the peak of the step's new tensors alone, 'total': as above, 'allocator peak':
    the CUDA allocator's peak over the step (NaN on CPU), which counts the same and the batch}.
    A held buffer that the step frees (backprop's zero_grad(set_to_none=True)) stops counting
    when it is freed, so total <= weights + held + step peak.
    Call `fn` once before, so that buffers created at the first step are held, not counted twice."""
    params = list(model.parameters())
    out = {"weights": tensor_bytes(params), "held": tensor_bytes(held_tensors(params, optimizer)),
           "step peak": peak_tensor_bytes(fn)}
    out["total"] = out["weights"] + peak_tensor_bytes(fn, held=lambda: held_tensors(params, optimizer))
    out["allocator peak"] = peak_memory(fn, device)
    return out


def saved_bytes(fn, exclude=()):
    """Bytes of tensors that autograd stores for a backward pass while `fn` runs: the
    activation tape of backprop. Forward mode stores none. Each saved tensor counts its own
    elements once (views of one tensor once); tensors whose memory belongs to one of
    `exclude` (e.g. the parameters, which exist anyway) are not counted. Any device."""
    if not callable(fn):
        raise TypeError(f"fn must be a no-argument callable (e.g. lambda: method.step(x, y)), got {fn!r}")
    excluded = {t.data_ptr() for t in exclude}
    seen = {}

    def pack(t):
        if t.data_ptr() not in excluded:
            seen[(t.data_ptr(), t.device)] = max(seen.get((t.data_ptr(), t.device), 0),
                                                 t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _mean_curve(validation, method):
    missing = {"method", "iteration", "time", "loss"} - set(validation.columns)
    if missing:
        raise ValueError(f"validation must have columns method, iteration, time and loss; "
                         f"it lacks {sorted(missing)}")
    rows = validation[validation["method"] == method]
    if rows.empty:
        raise ValueError(f"no validation rows for method {method!r}")
    return rows.groupby("iteration")[["time", "loss"]].mean().sort_index()


def time_to_target(validation, fg="forward gradient", bp="backprop"):
    """T_b, T_f and their ratio from validation rows of several runs of both methods.

    `validation` has columns method, run, iteration, time, loss. Losses and times
    are averaged over runs at each iteration. T_f is NaN, and `reached` False,
    when forward gradient never reaches backprop's best loss within the run.
    """
    bp_curve, fg_curve = _mean_curve(validation, bp), _mean_curve(validation, fg)
    best = bp_curve["loss"].idxmin()
    target, t_b = bp_curve.loc[best, "loss"], bp_curve.loc[best, "time"]
    hit = fg_curve[fg_curve["loss"] <= target]
    t_f = hit["time"].iloc[0] if len(hit) else float("nan")
    return {"target_loss": float(target), "T_b": float(t_b), "T_f": float(t_f),
            "T_f/T_b": float(t_f / t_b) if len(hit) and t_b > 0 else float("nan"),
            "reached": bool(len(hit))}


def describe_ratio(value):
    """'never within the run' for a missing T_f/T_b, else the number to 3 decimals."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"value must be a number (NaN for never), got {value!r}")
    return "never within the run" if not np.isfinite(value) else f"{value:.3f}"


def step_parts(model, loss_fn, x, y, kind="normal", seed=0, engine="auto"):
    """{(method, part): no-argument callable}: the parts of each method's step, to time apart.

    forward gradient: draw v (one random number per parameter), the forward-mode pass
    (value and directional derivative, with `engine`), form g = d v; backprop: the forward
    pass with recording and the backward pass; both: the foreach SGD update. Plus the base
    runtime (forward and loss, no derivatives).
    """
    from .directions import make_generator, sample_directions
    from .forward_grad import module_jvp
    device = next(model.parameters()).device
    params = list(model.parameters())
    gen = make_generator(seed, device)
    v = sample_directions(params, kind, gen)
    d = module_jvp(model, loss_fn, x, y, v, engine=engine)[1]
    for p in params:  # gradients to update with
        p.grad = torch.zeros_like(p)
    sgd = torch.optim.SGD(params, lr=1e-9, foreach=True)

    def forward_backward():
        sgd.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()

    return {
        ("base", "forward and loss, no derivatives"): base_call(model, loss_fn, x, y),
        ("forward gradient", "draw v"): lambda: sample_directions(params, kind, gen),
        ("forward gradient", "forward-mode pass"): lambda: module_jvp(model, loss_fn, x, y, v, engine=engine),
        ("forward gradient", "form g = d v"): lambda: torch._foreach_mul(v, d),
        ("backprop", "forward (recording) and backward"): forward_backward,
        ("both", "SGD update"): sgd.step,
    }


def step_breakdown(model, loss_fn, x, y, kind="normal", seed=0, warmup=5, repeats=30, engine="auto"):
    """Median milliseconds of each part of each method's step (step_parts), interleaved, to see
    where the time goes: {(method, part): ms}."""
    device = next(model.parameters()).device
    medians = median_times(step_parts(model, loss_fn, x, y, kind, seed, engine), device, warmup, repeats)
    return {key: 1e3 * t for key, t in medians.items()}
