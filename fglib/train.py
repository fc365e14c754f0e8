"""The training loop shared by both methods, and evaluation.

`train` runs a method for N iterations on seeded mini-batches and records, per
iteration, the training loss and the elapsed training time (the device is
synchronised before each clock reading; time spent on validation is not
counted), and the validation loss every `eval_every` iterations. The result is
a tidy pandas table with columns

    iteration, time, split ('train' or 'validation'), loss, accuracy (validation rows only)

that seaborn plots directly (hue='method' once runs are concatenated).
"""
from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as checkpoints
from . import checks
from .data import BatchSampler, Split, check_split
from .device import device_name, synchronize
from . import engine
from .functions import PointModel
from .methods import Method


def progress_bar(iterable, **kwargs):
    """tqdm's notebook bar where ipywidgets are installed, its text bar elsewhere (quietly); the
    iterable itself, with no bar, where tqdm is not installed (it is the `progress` extra).

    FGLIB_PROGRESS=text (set by tools/book.py for papermill runs) asks for the text bar.
    """
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return iterable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm.auto warns when it falls back to text
        if os.environ.get("FGLIB_PROGRESS") == "text":
            from tqdm.std import tqdm
        else:
            from tqdm.auto import tqdm
        return tqdm(iterable, **kwargs)


class evaluation_mode:
    """`with evaluation_mode(model):` the model in eval mode (Dropout off, BatchNorm reading its
    running statistics without updating them) and no gradients recorded; its own mode, training
    or not, restored after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training, self.grad = self.model.training, torch.no_grad()
        self.model.eval()
        self.grad.__enter__()
        return self.model

    def __exit__(self, *exc):
        self.grad.__exit__(*exc)
        self.model.train(self.was_training)


def evaluate(model: nn.Module, split: Split, loss_fn: Callable = F.cross_entropy,
             batch_size: int = 2000) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` on a whole Split, in batches, in eval mode (a Dropout
    model is evaluated whole, a BatchNorm model on its running statistics, which stay as they
    were); the model's mode is restored after."""
    check_split("split", split)
    batch_size = checks.count("batch_size", batch_size)
    if len(split) == 0:
        raise ValueError("split is empty: there is nothing to evaluate (pass a Split with at least one example)")
    total_loss, correct = 0.0, 0
    with evaluation_mode(model):
        for i in range(0, len(split), batch_size):
            x, y = split.x[i:i + batch_size], split.y[i:i + batch_size]
            out = model(x)
            total_loss += loss_fn(out, y).item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
    return total_loss / len(split), correct / len(split)


def check_data_labels(method, data):
    """For a cross-entropy loss: every label of every split is a class of the model's output
    (or the loss's ignore_index), checked once here, so that no step needs to (on a GPU an
    out-of-range label would otherwise end in a device-side assert)."""
    try:
        ignore_index = engine.cross_entropy_options(method.loss_fn).get("ignore_index", -100)
    except engine.Unsupported:
        return   # another loss: its labels are its own business
    with evaluation_mode(method.model):   # one example: no BatchNorm statistics touched, none needed
        logits = method.model(data["train"].x[:1])
    for name, split in data.items():
        if not split.y.is_floating_point():
            try:
                engine.check_labels(logits, split.y, ignore_index)
            except ValueError as err:
                raise ValueError(f"data[{name!r}]: {err}") from None


def stop_if_not_finite(method_name, split, iteration, loss):
    """A NaN or infinite loss stops the run, saying which loss, when, and what to try."""
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"{method_name}: the {'training' if split == 'train' else 'validation'} loss became {loss} "
            f"at iteration {iteration}; the run diverged: try a smaller learning rate "
            "(or check the data and the model for NaN)")


def _checked_settings(method, data, iterations, batch_size, eval_every, seed, eval_examples, eval_at, on_diverge,
                      eval_splits):
    """train's arguments checked (each error names its argument): the counts, the set of
    iterations to evaluate at, and the evaluation splits (cut to `eval_examples`)."""
    if not isinstance(method, Method):
        raise TypeError(f"method must be a method from fglib.make_method, got {type(method).__name__}")
    if data is not None and not (isinstance(data, dict) and {"train", "validation"} <= set(data)):
        raise TypeError("data must be the dict from fglib.load_data (with 'train' and 'validation'), "
                        f"or None for a test function; got {type(data).__name__}")
    for name, split in (data or {}).items():
        check_split(f"data[{name!r}]", split)
    if data is None and not isinstance(method.model, PointModel):
        raise TypeError(f"data is None, which only a test function's model takes (fglib.PointModel); this method "
                        f"trains a {type(method.model).__name__}: pass data=fglib.load_data(...)")
    iterations, batch_size = checks.count("iterations", iterations), checks.count("batch_size", batch_size)
    eval_every, seed = checks.count("eval_every", eval_every), checks.seed("seed", seed)
    eval_examples = checks.optional_count("eval_examples", eval_examples)
    checks.choice("on_diverge", on_diverge, ("raise", "stop"))
    if eval_at is None:
        eval_at = {0, iterations, *range(eval_every, iterations + 1, eval_every)}
    else:
        eval_at = {checks.integer("eval_at[i]", i, minimum=0, maximum=iterations) for i in eval_at}
    splits = {}
    if data is not None:
        checks.same_place("the model's parameters", method.params[0], **{"data['train'].x": data["train"].x})
        check_data_labels(method, data)
        for name in eval_splits:
            checks.choice("eval_splits", name, [s for s in data if s != "train"])
            split = data[name]
            splits[name] = type(split)(split.x[:eval_examples], split.y[:eval_examples]) if eval_examples else split
    return iterations, batch_size, seed, eval_at, splits


def train(method: Method, data: dict[str, Split] | None = None, iterations: int = 1000, batch_size: int = 64,
          eval_every: int = 100, seed: int = 0,
          progress=True, desc=None, record=None, eval_examples=None, eval_at=None, on_diverge="raise",
          eval_splits=("validation",), checkpoint=None, checkpoint_every=300.0):
    """Run `method` for `iterations` steps; return the tidy loss table.

    The validation loss and accuracy (and those of the other `eval_splits`, e.g. 'test') are
    evaluated at iteration 0, every `eval_every` iterations and at the last one; or, if
    `eval_at` is given, at exactly those iterations (e.g. fglib.to_target.eval_schedule's).

    A NaN or infinite loss raises FloatingPointError (on_diverge='raise'), or, with
    on_diverge='stop', ends the run there: the table then holds the rows up to the last finite
    loss and its attribute `diverged_at` the iteration of the first non-finite one. Its attribute
    `wall_seconds` is the run's wall-clock time, evaluations included, over every sitting.

    `data` is the dict from `load_data` (or None for a test function, whose
    model takes no input). The batch order depends only on `seed`. `record`, if
    given, maps the model to a dict of extra columns for each training row
    (e.g. the point on a test function's trajectory). `eval_examples` limits the
    validation loss to the first that many validation images (all by default). Its attribute
    `sittings` lists where each sitting ran: [{"device": device_name, "from": the iteration it
    resumed at}].

    `checkpoint`, a file path: every `checkpoint_every` seconds (and at the end) the run's whole
    state is saved there (weights, optimiser and schedule, the data order's and the directions'
    generators, the table so far); a call that finds the file resumes from it, bit for bit as
    if it had never stopped, and may ask for more iterations than the first call did.
    """
    iterations, batch_size, seed, eval_at, splits = _checked_settings(
        method, data, iterations, batch_size, eval_every, seed, eval_examples, eval_at, on_diverge, eval_splits)
    checkpoint_every = checks.real("checkpoint_every", checkpoint_every, positive=True)
    device = method.params[0].device
    batches = BatchSampler(data["train"], batch_size, seed) if data is not None else None
    run = Run(method, batches, record)
    if checkpoint is None:
        return _loop(run, iterations, device, data, eval_at, splits, on_diverge, progress, desc)
    with checkpoints.lock(checkpoint):
        if os.path.exists(checkpoint):
            run.load(checkpoint, iterations)
        return _loop(run, iterations, device, data, eval_at, splits, on_diverge, progress, desc,
                     checkpoint, checkpoint_every)


def _loop(run, iterations, device, data, eval_at, splits, on_diverge, progress, desc, checkpoint=None,
        checkpoint_every=300.0):
    """Train `run` from where it stands to `iterations` (train's loop); the tidy table."""
    method = run.method
    if run.done == 0 and not run.rows and data is None:   # a test function: its starting value
        with torch.no_grad():
            run.add(0, "train", method.loss_fn(method.model(None), None).item())
    elif run.done == 0 and not run.rows and 0 in eval_at:
        run.evaluate(0, splits)
    run.sittings.append({"device": device_name(device), "from": run.done})
    saved_at = time.monotonic()
    for i in progress_bar(range(run.done + 1, iterations + 1), desc=desc or method.name, disable=not progress,
                          mininterval=5.0, initial=run.done, total=iterations):
        try:
            run.step(i, device)
            if data is not None and i in eval_at:
                run.evaluate(i, splits)
        except FloatingPointError:
            if on_diverge == "raise":
                raise
            run.diverged_at = i
            break
        if checkpoint is not None and (time.monotonic() - saved_at > checkpoint_every or i == iterations):
            run.save(checkpoint)
            saved_at = time.monotonic()
    table = pd.DataFrame(run.rows)
    table.attrs["diverged_at"] = run.diverged_at
    table.attrs["wall_seconds"] = run.wall()
    table.attrs["sittings"] = run.sittings
    return table


def default_setting(cls, name):
    """The default of the keyword `name` that cls (or a class it builds on) takes, or a marker that
    equals nothing: a checkpoint written before fglib had that setting ran at that default."""
    import inspect
    for klass in cls.__mro__:
        parameter = inspect.signature(klass.__init__).parameters.get(name) if "__init__" in vars(klass) else None
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return object()


def global_rng():
    """torch's global generators (CPU, and each GPU's once CUDA is in use): Dropout and other
    layers draw from them, so a run resumes bit for bit only with their state saved."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_global_rng(state):
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class Run:
    """One training run in progress: its rows, the clock and where it stands; it can save its
    whole state to a file and load it back (fglib.train's checkpoints)."""

    def __init__(self, method, batches, record=None):
        self.method, self.batches, self.record = method, batches, record
        self.settings = {**method.settings(), **({} if batches is None else {
            "batch_size": batches.batch_size, "train_size": len(batches.split), "data_seed": batches.seed})}
        self.rows, self.elapsed, self.done, self.diverged_at = [], 0.0, 0, None
        self.sittings = []   # where each sitting ran (a run resumed on another machine names both)
        self.wall_before, self.sitting_start = 0.0, time.monotonic()

    def wall(self):
        """Seconds of wall-clock time over every sitting of the run so far: steps, evaluations and
        checkpoints (`elapsed` counts the steps only)."""
        return self.wall_before + time.monotonic() - self.sitting_start

    def add(self, i, split, loss, accuracy=math.nan):
        stop_if_not_finite(self.method.name, split, i, loss)
        extra = self.record(self.method.model) if self.record is not None and split == "train" else {}
        self.rows.append({"iteration": i, "time": self.elapsed, "split": split, "loss": loss,
                          "accuracy": accuracy, **extra})

    def step(self, i, device):
        """Step i on the next mini-batch; the clock counts the step only (synchronised)."""
        x, y = next(self.batches) if self.batches is not None else (None, None)
        synchronize(device)
        start = time.perf_counter()
        loss = self.method.step(x, y).item()  # .item() waits for the device
        self.elapsed += time.perf_counter() - start
        self.done = i
        self.add(i, "train", loss)

    def evaluate(self, i, splits):
        for name, split in splits.items():
            self.add(i, name, *evaluate(self.method.model, split))

    def save(self, path):
        """Write the state to `path` atomically, with its SHA-256 (fglib.checkpoint)."""
        checkpoints.save(path, {
            "settings": self.settings, "rows": self.rows, "elapsed": self.elapsed, "done": self.done,
            "wall": self.wall(), "sittings": self.sittings,
            "model": self.method.model.state_dict(), "method": self.method.state_dict(),
            "batches": None if self.batches is None else self.batches.state_dict(), "global_rng": global_rng()})

    def load(self, path, iterations):
        """Go on from the state saved in `path`, after checking that it is this run's: the same
        settings (method, rate, decay, optimiser, direction law, K, seeds, batch size, training-set
        size) and no more iterations done than `iterations` asks for."""
        state = checkpoints.load(path)
        saved = state.get("settings")
        if saved is None:
            raise checkpoints.CheckpointError(
                f"checkpoint {os.fspath(path)!r} records no settings (written by an older fglib), so it cannot be "
                "checked against this run: delete it to start again, or resume it with the fglib that wrote it")
        added = {k for k in set(self.settings) - set(saved)   # settings fglib gained since, at their default
                 if self.settings[k] == default_setting(type(self.method), k)}
        differ = [f"{k}: saved {saved.get(k, 'nothing')!r}, now {self.settings.get(k, 'nothing')!r}"
                  for k in sorted(set(saved) | set(self.settings) - added) if saved.get(k) != self.settings.get(k)]
        if differ:
            raise checkpoints.CheckpointError(
                f"checkpoint {os.fspath(path)!r} belongs to another run; its settings differ from this one's in "
                + "; ".join(differ) + ". Pass the same settings to resume it, or another checkpoint path")
        if state["done"] > iterations:
            raise checkpoints.CheckpointError(
                f"checkpoint {os.fspath(path)!r} has done {state['done']:,} iterations, more than the {iterations:,} "
                "asked for: ask for at least as many, or use another checkpoint path for a shorter run")
        self.rows, self.elapsed, self.done = state["rows"], state["elapsed"], state["done"]
        self.sittings = state["sittings"]
        self.wall_before, self.sitting_start = state["wall"], time.monotonic()
        self.method.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        if self.batches is not None:
            self.batches.load_state_dict(state["batches"])
        if state.get("global_rng") is not None:
            set_global_rng(state["global_rng"])
