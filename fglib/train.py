"""The training loop shared by both methods, and evaluation.

`train` runs a method for N iterations on seeded mini-batches and records, per
iteration, the training loss and the elapsed training time (the device is
synchronised before each clock reading; time spent on validation is not
counted), and the validation loss every `eval_every` iterations. The result is
a tidy pandas table with columns

    iteration, time, split ('train' or 'validation'), loss, accuracy (validation rows only)

that seaborn plots directly (hue='method' once runs are concatenated).
"""
import math
import os
import time
import warnings

import pandas as pd
import torch
import torch.nn.functional as F

from . import checks
from .data import BatchSampler
from .device import synchronize
from . import engine
from .functions import PointModel
from .methods import Method


def progress_bar(iterable, **kwargs):
    """tqdm's notebook bar where ipywidgets are installed, its text bar elsewhere (quietly).

    FGLIB_PROGRESS=text (set by tools/book.py for papermill runs) asks for the text bar.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm.auto warns when it falls back to text
        if os.environ.get("FGLIB_PROGRESS") == "text":
            from tqdm.std import tqdm
        else:
            from tqdm.auto import tqdm
        return tqdm(iterable, **kwargs)


@torch.no_grad()
def evaluate(model, split, loss_fn=F.cross_entropy, batch_size=2000):
    """(mean loss, accuracy) of `model` on a whole Split, in batches."""
    batch_size = checks.count("batch_size", batch_size)
    total_loss, correct = 0.0, 0
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
    with torch.no_grad():
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


def train(method, data=None, iterations=1000, batch_size=64, eval_every=100, seed=0,
          progress=True, desc=None, record=None, eval_examples=None, eval_at=None, on_diverge="raise"):
    """Run `method` for `iterations` steps; return the tidy loss table.

    The validation loss and accuracy are evaluated at iteration 0, every `eval_every`
    iterations and at the last one; or, if `eval_at` is given, at exactly those iterations
    (e.g. fglib.to_target.eval_schedule's log-spaced ones).

    A NaN or infinite loss raises FloatingPointError (on_diverge='raise'), or, with
    on_diverge='stop', ends the run there: the table then holds the rows up to the last finite
    loss and its attribute `diverged_at` the iteration of the first non-finite one.

    `data` is the dict from `load_data` (or None for a test function, whose
    model takes no input). The batch order depends only on `seed`. `record`, if
    given, maps the model to a dict of extra columns for each training row
    (e.g. the point on a test function's trajectory). `eval_examples` limits the
    validation loss to the first that many validation images (all by default).
    """
    if not isinstance(method, Method):
        raise TypeError(f"method must be a method from fglib.make_method, got {type(method).__name__}")
    if data is not None and not (isinstance(data, dict) and {"train", "validation"} <= set(data)):
        raise TypeError("data must be the dict from fglib.load_data (with 'train' and 'validation'), "
                        f"or None for a test function; got {type(data).__name__}")
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
    device = method.params[0].device
    if data is not None:
        checks.same_place("the model's parameters", method.params[0], **{"data['train'].x": data["train"].x})
        check_data_labels(method, data)
    batches = BatchSampler(data["train"], batch_size, seed) if data is not None else None
    if data is not None:
        val = data["validation"]
        val = type(val)(val.x[:eval_examples], val.y[:eval_examples]) if eval_examples else val
    rows, elapsed = [], 0.0

    def add(i, split, loss, accuracy=math.nan):
        stop_if_not_finite(method.name, split, i, loss)
        extra = record(method.model) if record is not None and split == "train" else {}
        rows.append({"iteration": i, "time": elapsed, "split": split, "loss": loss, "accuracy": accuracy,
                     **extra})

    if data is not None and 0 in eval_at:
        add(0, "validation", *evaluate(method.model, val))
    else:
        with torch.no_grad():
            add(0, "train", method.loss_fn(method.model(None), None).item())
    diverged_at = None
    for i in progress_bar(range(1, iterations + 1), desc=desc or method.name, disable=not progress,
                          mininterval=5.0):
        x, y = next(batches) if batches is not None else (None, None)
        synchronize(device)
        start = time.perf_counter()
        loss = method.step(x, y).item()  # .item() waits for the device
        elapsed += time.perf_counter() - start
        try:
            add(i, "train", loss)
            if data is not None and i in eval_at:
                add(i, "validation", *evaluate(method.model, val))
        except FloatingPointError:
            if on_diverge == "raise":
                raise
            diverged_at = i
            break
    table = pd.DataFrame(rows)
    table.attrs["diverged_at"] = diverged_at
    return table
