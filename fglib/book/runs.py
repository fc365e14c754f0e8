"""Long experiments as runs that survive a stop, saved raw as each one finishes.

A plan names an experiment's settings once, for its chapter and for `tools/book.py runs` alike.
Each (seed, method) run is trained with a checkpoint (fglib.train: the whole state every few
minutes, resumed bit for bit), saved as soon as it finishes, and skipped when the chapter or
the tool runs again. Nothing here grades anything: the grading module reads these files.

Raw layout, under a results folder (`book/results` for the book):

    raw/<experiment>/<method>-seed<seed>.csv.gz   one row per observation of one run:
        experiment, model, method, lr, seed, run, iteration, time, split, loss, accuracy
        (split 'validation' and 'test' at every evaluation; 'train', the step's own loss,
        every `train_every` iterations; time is the run's training time so far, in seconds)
    raw/<experiment>/<method>-seed<seed>.json     the run's record: the plan, the device (each
        sitting's, for a run resumed elsewhere), torch and Python versions, threads, minutes of
        training over every sitting, when it finished

Checkpoints (never in git): <checkpoints>/<experiment>/<method>-seed<seed>.pt, kept after a run
finishes so that a longer plan can extend it.

Parked checkpoints (in git): <parked>/<experiment>/<method>-seed<seed>.pt, a copy of an unfinished
run's checkpoint made at the end of a sitting (`tools/book.py runs <plan> --park`). A sitting that
starts on a fresh clone has no local checkpoints; it resumes each run from its parked copy, bit for
bit, and the copy is deleted when the run is saved. A run longer than a sitting needs this.

To add a long experiment, add a Plan to PLANS; its chapter calls run_missing(PLANS[name], ...).
"""
import dataclasses
import datetime
import json
import os
import pathlib
import platform

import pandas as pd
import torch
import torch.nn.functional as F

from .. import checkpoint as checkpoint_file_io
from .. import checks
from ..device import device_name
from .report import note_read, read_json, write_index
from ..methods import PAPER_DECAY
from ..registry import LABELS, make_method
from ..models import build_model
from ..to_target import eval_schedule
from ..train import train


@dataclasses.dataclass(frozen=True)
class Plan:
    """One experiment's runs: `runs` seeds (seed, seed + 1, ...), each trained by every method."""
    experiment: str
    model: str
    lr: float
    runs: int
    iterations: int
    seed: int = 0
    methods: tuple = ("fg", "bp")
    batch_size: int = 64
    eval_points: int = 60
    train_every: int = 100
    costs: str = None   # the plan whose step timings and memory these runs share (None: its own)

    def seeds(self):
        return [self.seed + r for r in range(self.runs)]

    def smaller(self, **changes):
        """The same plan with some settings changed (a smoke run, a longer run)."""
        return dataclasses.replace(self, **changes)


# The paper's CNN (Section 5.5): rate 2e-4 with the paper's decay, batch 64, five paired runs.
# 30 log-spaced evaluations (plus every 2% over the second half), each of the validation and the
# test set: an evaluation costs about as much as 100 CNN steps on a CPU. The length: the first
# backprop run, of 30,000 iterations (plan cnn_30k), still fell 42% over its last fifth, and the
# grading module's extrapolation over the rest of the schedule (grading.settled) put the length
# at which the decay freezes it at about 70,000 iterations.
PLANS = {
    "cnn": Plan("cnn", "cnn", 2e-4, runs=5, iterations=70_000, methods=("bp", "fg"), eval_points=30),
    "cnn_30k": Plan("cnn_30k", "cnn", 2e-4, runs=1, iterations=30_000, methods=("bp",), eval_points=30),
    # The paper's logistic regression (Section 5.3): rate 1e-4, five paired runs. 60,000 iterations:
    # at 30,000 backprop's loss still fell 3.1% over the last fifth (the book's earlier runs).
    "logreg": Plan("logreg", "logreg", 1e-4, runs=5, iterations=60_000, methods=("bp", "fg"), eval_points=60),
    # The paper's MLP (Section 5.4) at its two rates, five paired runs each. At 2e-5 the decay
    # spends most of its step by 30,000 iterations; at 2e-4 backprop was still falling at 30,000,
    # and by the book's earlier runs levels off by about 70,000.
    "mlp": Plan("mlp", "mlp", 2e-5, runs=5, iterations=30_000, methods=("bp", "fg"), eval_points=60),
    "mlp_long": Plan("mlp_long", "mlp", 2e-4, runs=5, iterations=70_000, methods=("bp", "fg"), eval_points=70,
                     costs="mlp"),
}


def costs_experiment(plan):
    """The experiment folder holding the plan's step timings and memory: the cost of a step
    depends on the model and the batch, not on the rate, so both MLP plans share the MLP's."""
    return plan.costs or plan.experiment


def run_stem(method, seed):
    return f"{method}-seed{seed}"


def raw_folder(folder, experiment):
    return pathlib.Path(folder) / "raw" / experiment


def is_saved(plan, folder, method, seed):
    """A run counts as saved when its record says it ran the plan's iterations (or more)."""
    record = raw_folder(folder, plan.experiment) / f"{run_stem(method, seed)}.json"
    return record.exists() and read_json(record)["iterations_done"] >= plan.iterations


def pending(plan, folder):
    """[(run index, seed, method)] of the plan's runs not saved yet, in the order they run."""
    return [(r, s, m) for r, s in enumerate(plan.seeds()) for m in plan.methods if not is_saved(plan, folder, m, s)]


PARKED = "parked"   # beside the results folder (book/parked): unfinished runs' checkpoints, in git


def checkpoint_file(checkpoints, plan, method_name, seed):
    """Where a run's checkpoint lives under a checkpoints (or parked) folder."""
    return pathlib.Path(checkpoints) / plan.experiment / f"{run_stem(method_name, seed)}.pt"


def iterations_in(checkpoint):
    """The iterations a checkpoint file has done (0 where there is none)."""
    path = pathlib.Path(checkpoint)
    return checkpoint_file_io.load(path, map_location="cpu")["done"] if path.exists() else 0


def copy_if_further(source, target):
    """Copy checkpoint `source` over `target` if it has done more iterations (atomically: a stop
    mid-copy leaves the old file); the iterations the target holds after."""
    done = iterations_in(source)
    if done > iterations_in(target):
        checkpoint_file_io.copy(source, target)   # checked on the way, written atomically
    return iterations_in(target)


def park(plan, folder="results", checkpoints=".checkpoints", parked=PARKED):
    """Copy each unsaved run's local checkpoint into `parked` (a folder kept in git) where it is
    further on than the parked one, so that a sitting on a fresh clone resumes it.
    {run stem: iterations the parked copy holds}."""
    for _, seed, method_name in pending(plan, folder):
        copy_if_further(*(checkpoint_file(f, plan, method_name, seed) for f in (checkpoints, parked)))
    return parked_runs(plan, folder, parked)


def parked_runs(plan, folder="results", parked=PARKED):
    """{run stem: iterations its parked checkpoint holds} of the plan's unsaved runs."""
    held = {run_stem(m, s): iterations_in(checkpoint_file(parked, plan, m, s)) for _, s, m in pending(plan, folder)}
    return {stem: done for stem, done in held.items() if done}


def drop_parked(plan, folder="results", parked=PARKED):
    """Delete the parked checkpoints of the plan's saved runs (runs finished elsewhere, such as
    in a GPU chunk, whose sitting could not delete this checkout's copy); the paths deleted."""
    gone = [checkpoint_file(parked, plan, m, s) for s in plan.seeds() for m in plan.methods
            if is_saved(plan, folder, m, s) and checkpoint_file(parked, plan, m, s).exists()]
    for path in gone:
        path.unlink()
    return gone


def train_one(plan, data, method_name, seed, checkpoint, device="cpu", progress=True, checkpoint_every=300.0):
    """One run of the plan, resumed from `checkpoint` if it exists (saved every
    `checkpoint_every` seconds); its tidy table."""
    model = build_model(plan.model, seed=seed, device=device)
    method = make_method(method_name, model, F.cross_entropy, plan.lr, seed=seed)
    return train(method, data, plan.iterations, plan.batch_size, seed=seed, progress=progress,
                 desc=f"{plan.experiment}: {LABELS[method_name]}, seed {seed}",
                 eval_at=eval_schedule(plan.iterations, plan.eval_points), eval_splits=("validation", "test"),
                 checkpoint=checkpoint, checkpoint_every=checkpoint_every)


def save_run(plan, folder, run, seed, method_name, curve, device, minutes):
    """The run's rows (evaluations, and every train_every-th training loss) and its record."""
    keep = (curve["split"] != "train") | (curve["iteration"] % plan.train_every == 0)
    rows = curve[keep][["iteration", "time", "split", "loss", "accuracy"]]
    rows.insert(0, "run", run)
    for i, (column, value) in enumerate((("experiment", plan.experiment), ("model", plan.model),
                                         ("method", LABELS[method_name]), ("lr", plan.lr),
                                         ("seed", seed))):
        rows.insert(i, column, value)
    out = raw_folder(folder, plan.experiment)
    out.mkdir(parents=True, exist_ok=True)
    stem = run_stem(method_name, seed)
    write_csv(rows, out / f"{stem}.csv.gz")
    record = {"plan": dataclasses.asdict(plan), "method": method_name, "seed": seed, "run": run,
              "iterations_done": int(curve["iteration"].max()), "decay": PAPER_DECAY,
              "device": sittings_device(curve.attrs.get("sittings"), device), "sittings": curve.attrs.get("sittings"),
              "torch": torch.__version__, "python": platform.python_version(),
              "threads": torch.get_num_threads(), "minutes": minutes,
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    write_index(folder)


def sittings_device(sittings, device):
    """The device a run's record names: its sittings' devices in order, each once ('CPU (...)
    then NVIDIA H200' for a run resumed on a GPU); this device where no sitting was recorded."""
    names = list(dict.fromkeys(s["device"] for s in sittings or []))
    return " then ".join(names) if names else device_name(device)


def run_missing(plan, data, folder="results", checkpoints=".checkpoints", device="cpu", progress=True,
                max_runs=None, parked=None):
    """Train and save every run of the plan that is not saved yet (at most `max_runs` of them),
    each resumed from its checkpoint if a stop interrupted it. A finished run keeps its last
    checkpoint, so that a plan made longer later extends its runs instead of starting them again
    (the schedule's rate depends on the iteration only, so the extended run trains exactly as one
    run straight to the new length would; only its evaluation points before the old end differ).
    With `parked` (see park), a run starts from its parked checkpoint where that is further on
    than the local one, and its parked copy is deleted once the run is saved.
    Returns the runs trained now. max_runs=0 trains none; a negative count is refused."""
    if max_runs is not None:
        max_runs = checks.integer("max_runs", max_runs, minimum=0)
    done = []
    for run, seed, method_name in pending(plan, folder)[:max_runs]:
        checkpoint = checkpoint_file(checkpoints, plan, method_name, seed)
        kept = None if parked is None else checkpoint_file(parked, plan, method_name, seed)
        if kept is not None:
            copy_if_further(kept, checkpoint)
        curve = train_one(plan, data, method_name, seed, checkpoint, device, progress)
        # every sitting of the run, not only this one (a run resumed from a checkpoint)
        save_run(plan, folder, run, seed, method_name, curve, device, curve.attrs["wall_seconds"] / 60)
        if kept is not None and kept.exists():
            kept.unlink()
        done.append((run, seed, method_name))
    return done


def load_runs(folder, experiment):
    """Every saved run of an experiment, one tidy table (empty if none has finished)."""
    files = sorted(raw_folder(folder, experiment).glob("*-seed*.csv.gz"))
    note_read([raw_folder(folder, experiment) / "*-seed*.csv.gz"])
    return pd.concat([read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def load_records(folder, experiment):
    """The records of an experiment's saved runs, a row each."""
    files = sorted(raw_folder(folder, experiment).glob("*-seed*.json"))
    note_read([raw_folder(folder, experiment) / "*-seed*.json"])
    return pd.DataFrame([read_json(f) for f in files])


def measure_steps(plan, data, repeats=30, warmup=5, device="cpu"):
    """Timing rounds of the plan's step in this process, raw: one row per (round, name) for the
    base call (forward and loss), a forward-gradient step and a backprop step, interleaved
    (fglib.timing.timed_rounds), on a batch of the plan's size from the training set."""
    from ..measure import base_call
    from ..timing import keep_freed_memory, timed_rounds
    keep_freed_memory()
    g = torch.Generator().manual_seed(plan.seed)
    idx = torch.randint(len(data["train"]), (plan.batch_size,), generator=g).to(data["train"].y.device)
    x, y = data["train"].x[idx], data["train"].y[idx]
    model = build_model(plan.model, seed=plan.seed, device=device)
    fns = {"base": base_call(model, F.cross_entropy, x, y)}
    for m in plan.methods:   # a small rate: the steps change the weights, not the cost
        method = make_method(m, model, F.cross_entropy, 1e-9, seed=plan.seed)
        fns[LABELS[m]] = lambda method=method: method.step(x, y)
    return timed_rounds(fns, device, warmup, repeats)


def _memory_row(model_name, model_kwargs, method, x, y, seed, device):
    """One method's step memory in the paper's sense (fglib.measure.step_memory) on a fresh
    model, after a first step (buffers a first step creates are held from then on). `method` is
    a registry name or a (name, keyword arguments, label) triple such as FG_REGENERATED."""
    from ..measure import step_memory
    name, kwargs, label = (method, {}, LABELS[method]) if isinstance(method, str) else method
    model = build_model(model_name, seed=seed, device=device, **model_kwargs)
    method = make_method(name, model, F.cross_entropy, 1e-9, seed=seed, **kwargs)
    method.step(x, y)
    return {"method": label, **step_memory(model, lambda: method.step(x, y), method.optimizer, device),
            "batch_size": len(y), "device": device_name(device), "torch": torch.__version__}


# Claim 6 (no memory difference) over every network the paper ran, at its batch of 64: the three
# MNIST networks and the depth sweep (width 1024, no bias). Each: (label, model name, model arguments).
MEMORY_NETWORKS = [("logistic regression", "logreg", {}), ("MLP", "mlp", {}), ("CNN", "cnn", {}),
                   *[(f"depth {d}", "deep", {"depth": d}) for d in (1, 2, 5, 10, 20, 50, 100)]]
# fg drawing each layer's part of v as the layer runs, and v whole only to write .grad
FG_REGENERATED = ("fg", {"regenerate": True, "draw": "blocks"}, "forward gradient, regenerated")
MEMORY_METHODS = ("bp", "fg", "bp_ckpt", FG_REGENERATED, "fg_inplace", "fd_inplace", "bp_inplace")   # and the in-place steps


def measure_network_memory(data, networks=MEMORY_NETWORKS, methods=MEMORY_METHODS, batch_size=64, device="cpu"):
    """Every network's step memory in the paper's sense for each method (backprop, forward
    gradient, backprop with activation checkpointing, forward gradient with v regenerated, and the
    lean steps: forward gradient, MeZO's finite difference and backprop in place): one row per
    (network, method), raw, with the device and versions."""
    x, y = data["train"].x[:batch_size], data["train"].y[:batch_size]
    return pd.DataFrame([{"network": label, "model": name, **{k: str(v) for k, v in kwargs.items()},
                          **_memory_row(name, kwargs, m, x, y, 0, device)}
                         for label, name, kwargs in networks for m in methods])


def load_memory(folder, experiment):
    path = raw_folder(folder, experiment) / "memory.csv"
    note_read([path])
    return read_csv(path) if path.exists() else pd.DataFrame()


def save_timings(plan, folder, rounds, device="cpu"):
    """Append one process's timing rounds to raw/<experiment>/timings.csv.gz (process = the next
    number), with the device and versions on every row."""
    path = raw_folder(folder, costs_experiment(plan)) / "timings.csv.gz"
    earlier = read_csv(path) if path.exists() else pd.DataFrame()
    rows = rounds.assign(process=int(earlier["process"].max()) + 1 if len(earlier) else 0,
                         device=device_name(device), torch=torch.__version__,
                         threads=torch.get_num_threads(), batch_size=plan.batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(pd.concat([earlier, rows], ignore_index=True), path)
    write_index(folder)


def plan_json(plan):
    """A plan as JSON text, to hand to a fresh process (plan_from_json reads it back)."""
    return json.dumps(dataclasses.asdict(plan))


def plan_from_json(text):
    """The Plan that plan_json wrote (its methods a tuple again)."""
    fields = json.loads(text)
    return Plan(**{**fields, "methods": tuple(fields["methods"])})


def time_in_processes(plan, folder, processes=3, repeats=30, device="cpu"):
    """The plan's timing rounds, each process's rounds measured in a fresh Python process, so that
    the spread between processes can be reported beside the spread within one; saved raw and
    appended, like save_timings."""
    import subprocess
    import sys
    for _ in range(processes):
        subprocess.run([sys.executable, "-c", "import sys; from fglib.book.runs import _time_one_process; "
                        "_time_one_process(sys.argv[1:])", plan.experiment, str(folder), "--repeats",
                        str(repeats), "--device", str(device), "--plan", plan_json(plan)],
                       check=True)


def _time_one_process(argv=None):
    """EXPERIMENT FOLDER --plan JSON [--repeats N] [--device D]: one process's timing rounds."""
    import argparse
    from ..data import load_data
    parser = argparse.ArgumentParser()
    parser.add_argument("experiment")
    parser.add_argument("folder")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    plan = plan_from_json(args.plan)
    data = load_data("mnist", device=args.device)
    save_timings(plan, args.folder, measure_steps(plan, data, repeats=args.repeats, device=args.device), args.device)


def write_csv(table, path):
    """A table as CSV (gzipped when the name ends in .gz, with no timestamp in the gzip header, so
    that the same rows saved again give the same bytes and read as unchanged), written to a
    temporary file of a unique name beside it and moved into place: a write that fails (a full
    disk, a stop) leaves the earlier table as it was."""
    import shutil
    import tempfile
    path = pathlib.Path(path)
    gz = path.name.endswith(".gz")
    folder = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")   # same name inside: gzip's header names it
    try:
        tmp = pathlib.Path(folder) / path.name
        table.to_csv(tmp, index=False, float_format="%.9g", compression={"method": "gzip", "mtime": 0} if gz else None)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_csv(path):
    """A saved raw table, refused (ValueError naming the file) when it is damaged: a gzip stream
    cut short, text that is not CSV, or a last row cut mid-way (every table write_csv writes ends
    with a newline), which would otherwise read as other numbers."""
    import gzip
    import io
    import zlib
    try:
        data = pathlib.Path(path).read_bytes()
        if str(path).endswith(".gz"):
            data = gzip.decompress(data)
        if data and not data.endswith(b"\n"):
            raise ValueError(f"{path} ends in a row cut short: restore it (git checkout -- {path}) or measure it again")
        return pd.read_csv(io.BytesIO(data))
    except (EOFError, OSError, zlib.error, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ValueError(f"{path} is damaged and cannot be read ({type(err).__name__}): restore it "
                         f"(git checkout -- {path}) or measure it again") from None


def save_table(folder, experiment, name, table, device="cpu"):
    """A chapter's raw measurements as raw/<experiment>/<name> (CSV, gzipped if the name ends in
    .gz), with the device, torch version and threads on every row: this process's, except on rows
    that carry their own already (a table extended across sittings keeps each row's)."""
    path = raw_folder(folder, experiment) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    table = table.assign(**{k: table[k].fillna(v) if k in table else v for k, v in stamp.items()})
    write_csv(table, path)
    write_index(folder)


def load_table(folder, experiment, name):
    """What save_table saved (empty if nothing was)."""
    path = raw_folder(folder, experiment) / name
    note_read([path])
    return read_csv(path) if path.exists() else pd.DataFrame()


def load_timings(folder, experiment):
    """Every saved timing round of an experiment (empty if none)."""
    path = raw_folder(folder, experiment) / "timings.csv.gz"
    note_read([path])
    return read_csv(path) if path.exists() else pd.DataFrame()


def progress_report(plan, folder, checkpoints=".checkpoints", parked=None):
    """How many runs remain, how far the interrupted ones got (locally, or in their parked
    copies), which local checkpoints are further on than their parked copies (with `parked`:
    progress a fresh clone would lose), and an estimate of the time left (from the minutes the
    saved runs took; None before any has finished)."""
    left = pending(plan, folder)
    records = load_records(folder, plan.experiment)
    per_run = float(records["minutes"].mean()) if len(records) else None
    started, unparked = {}, {}
    for _, seed, method_name in left:
        stem = run_stem(method_name, seed)
        local = iterations_in(checkpoint_file(checkpoints, plan, method_name, seed))
        kept = 0 if parked is None else iterations_in(checkpoint_file(parked, plan, method_name, seed))
        if max(local, kept):
            started[stem] = max(local, kept)
        if parked is not None and local > kept:
            unparked[stem] = local
    remaining = len(left) - sum(done / plan.iterations for done in started.values())
    return {"experiment": plan.experiment, "runs": plan.runs * len(plan.methods), "left": len(left),
            "iterations": plan.iterations, "in progress": started, "not parked": unparked, "minutes per run": per_run,
            "minutes left": None if per_run is None else per_run * remaining}


def smoke_plan(plan):
    """A few steps of the same plan, in a results folder of its own (the book's stay as they are):
    (plan, folder)."""
    import tempfile
    return plan.smaller(runs=2, iterations=40, eval_points=5, train_every=10), tempfile.mkdtemp()


def chapter_folders(folder):
    """Where a chapter's checkpoints and parked copies live: beside its results folder."""
    return f"{folder}/../.checkpoints", f"{folder}/../{PARKED}"


def progress_for_chapter(plan, folder):
    """progress_report for a chapter, counting its local and parked checkpoints."""
    checkpoints, parked = chapter_folders(folder)
    return progress_report(plan, folder, checkpoints, parked)


def run_for_chapter(plan, folder, device="cpu", train_runs=None, timing_repeats=30, processes=3, limit=None):
    """What a chapter does before it reads its plan: train the missing runs (at most `train_runs`;
    0: none), and time the step in `processes` separate processes if the plan measures its own
    costs and they are not saved yet."""
    from ..data import load_data
    if train_runs != 0 and progress_report(plan, folder)["left"]:
        data = load_data("mnist", device=device, limit=limit)
        checkpoints, parked = chapter_folders(folder)
        run_missing(plan, data, folder, device=device, max_runs=train_runs, checkpoints=checkpoints, parked=parked)
    if plan.costs is None and load_timings(folder, plan.experiment).empty:
        time_in_processes(plan, folder, processes, timing_repeats, device)


def load_plan(plan, folder):
    """A plan's saved measurements: {'runs', 'records', 'timings', 'all timings', 'memory'}: the
    timings of the plan it shares its costs with ('timings': those of the device used whole, the
    most threads, grading.whole_device; 'all timings': every thread count), and the memory of its model's step from claim 6's one table
    over every network (raw/networks/memory.csv), so that each is measured once."""
    from ..timing import whole_device
    networks = load_memory(folder, "networks")
    timings = load_timings(folder, costs_experiment(plan))
    return {"runs": load_runs(folder, plan.experiment), "records": load_records(folder, plan.experiment),
            "timings": whole_device(timings), "all timings": timings,
            "memory": networks[networks["model"] == plan.model] if not networks.empty else networks}
