"""What every chapter records and shows: device, versions, parameters; numbers glued into prose."""
import platform

import pandas as pd
import torch

from ..device import device_name
from .words import GLUED


def plain_value(value):
    """A setting as a reader writes it: lists joined by commas (by ' / ' where an item has a comma
    of its own, such as 'FG, normal'), no quotes around names, yes or no for a switch, 'default'
    for None, small numbers as the paper writes rates (2e-4, not 0.0002)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        items = [plain_value(v) for v in value]
        return (" / " if any("," in item for item in items) else ", ").join(items)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {plain_value(v)}" for k, v in value.items())
    if isinstance(value, float):
        return rate_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value is None:
        return "default"
    return str(value)


def exponent_text(x, digits=3, trim=False):
    """x in powers of ten to `digits` significant figures, the exponent unpadded: 1.19e-7, not
    Python's 1.19e-07; `trim` drops the mantissa's trailing zeros (2e-4)."""
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    if trim:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def rate_text(rate):
    """A learning rate as the paper writes it: 2e-4, not 0.0002 or 2e-04 (below 0.001 in powers
    of ten, otherwise as it is: 0.01, 1.5)."""
    if rate == 0 or abs(rate) >= 1e-3:
        return f"{rate:g}"
    return exponent_text(rate, 3, trim=True)


def listed(items):
    """Items in prose: 'a', 'a and b', 'a, b and c'."""
    items = [str(i) for i in items]
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


# what a run's eval_points counts (fglib.eval_schedule adds the rest)
EVAL_POINTS = "log-spaced evaluations per run; the start, the end and one every 2% of the run over its second half are added"

# settings a chapter takes (its papermill parameters), each in a few words for the settings table;
# a chapter passes its own where a name means something narrower there (environment(meanings=...))
SETTING_MEANINGS = {
    "device": "where it ran",
    "torch": "PyTorch's version",
    "python": "Python's version",
    "seed": "the random seed",
    "smoke": "tiny settings that run in seconds (for the tests)",
    "remeasure": "measure again rather than read the saved results",
    "train_runs": "most missing runs to train when the chapter runs (default: all); saved runs are read, not trained again",
    "results_dir": "folder of the saved raw results",
    "model_name": "the model",
    "models": "the models",
    "train_models": "the models trained",
    "iterations": "training iterations per run",
    "runs": "runs per setting, each with its own seed",
    "model_runs": "a model's own number of runs per rate",
    "rates": "learning rates tried, per method",
    "model_rates": "a model's own learning rates",
    "optimizer_rates": "learning rates tried, per method and optimiser",
    "fashion_local_rates": "learning rates of local FG-A on Fashion-MNIST",
    "finetune_rates": "learning rates tried, per regime and method",
    "regime_methods": "the methods of each fine-tuning regime",
    "fg_rate": "the forward gradient's learning rate",
    "bp_rate": "backprop's learning rate",
    "fg_lr": "the forward gradient's and the finite difference's learning rate",
    "bp_lr": "backprop's learning rate",
    "pretrain_iterations": "backprop iterations of pre-training",
    "pretrain_lr": "the pre-training learning rate",
    "subspace_dim": "dimension d of the random subspace",
    "eval_points": EVAL_POINTS,
    "eval_examples": "validation images per evaluation (default: all 10,000)",
    "target_loss": "validation loss a run must reach for time to target",
    "targets": "the losses and accuracies time to target is read at",
    "target_accuracy": "validation accuracy a run must reach for time to target",
    "timing_repeats": "interleaved timing rounds",
    "repeats": "timing rounds (medians are reported)",
    "batch_repeats": "timing rounds at each larger batch",
    "again_pairs": "the MLP chapter's timing run again: this many fresh processes and as many runs in this one",
    "again_repeats": "timing rounds in each of those runs",
    "batch_size": "the global batch, split evenly among the workers",
    "batch_sizes": "the batch sizes measured",
    "compile_variants": "also time torch.compile'd steps",
    "worlds": "numbers of workers",
    "limit": "training images each worker loads",
    "latency_us": "per-message latency of the model on paper (microseconds)",
    "n_steps": "step sizes h tried, from 1e-1 to 1e-12",
    "sizes": "input sizes n",
    "depths": "numbers of layers",
    "memory_depth": "the depth of the memory-against-batch measurement",
    "n_figure_samples": "forward gradients drawn in the first figure",
    "k_values": "numbers of directions K",
    "mc_repeats": "repeats of each K",
    "dims": "dimensions n",
    "variance_samples": "forward gradients drawn per point",
    "broken_samples": "draws for each broken direction law",
    "z_samples": "draws for the test of the mean",
    "n_samples": "forward gradients per model, point and law",
    "trained_steps": "backprop steps to the point part way through training",
    "k_model": "the model trained with K directions",
    "k_rates": "learning rates tried for each K",
    "k_bp_rates": "backprop's learning rates beside them",
    "k_budget": "directions per run (K directions a step: budget / K steps)",
    "k_runs": "runs per K and rate",
    "k_eval_points": EVAL_POINTS,
    "k_target_loss": "validation loss a run must reach for time to target",
    "exponents": "powers k of the finite difference's step h = 10^k",
    "n_directions": "directions per model and h",
    "quant_step": "the quantised model's weight grid q",
    "quant_h": "the finite difference's step h on that model",
    "quant_iterations": "training iterations on the quantised model",
    "runs trained on": "the device the saved runs trained on",
    "measured on": "the device the saved measurements were taken on",
    "beale": "Beale's function: learning rate / iterations",
    "rosenbrock": "Rosenbrock's function: learning rate / iterations",
    "beale_start": "the starting point (x, y) on Beale's function",
    "rosenbrock_start": "the starting point (x, y) on Rosenbrock's function",
}


# settings about how a chapter ran rather than what it measured: shown only when they differ from these
RUN_SETTINGS = {"smoke": False, "remeasure": False, "train_runs": 0, "results_dir": "results"}


def environment(device, meanings=None, **params):
    """A table of settings: device, torch version, Python, and the chapter's parameters, each with
    what it means (SETTING_MEANINGS, or the chapter's own `meanings` where a name means something
    narrower there); show it with fglib.book.tables.show. A setting of how the chapter ran
    (RUN_SETTINGS: smoke, remeasure, ...) appears only when it is not the usual value."""
    info = {"device": device_name(device), "torch": torch.__version__,
            "python": platform.python_version()}
    info.update({k: plain_value(v) for k, v in params.items()
                 if not (k in RUN_SETTINGS and v == RUN_SETTINGS[k] and type(v) is type(RUN_SETTINGS[k]))})
    meaning = {**SETTING_MEANINGS, **(meanings or {})}
    return pd.DataFrame({"setting": list(info), "value": list(info.values()),
                         "meaning": [meaning_of(k, meaning) for k in info]})


# the settings of a chapter's saved runs (fglib.book.runs.Plan), shown as 'plan: <field>'
PLAN_MEANINGS = {
    "model": "the model of the saved runs",
    "lr": "their learning rate",
    "runs": "runs of each method, seeds seed, seed + 1, ...",
    "iterations": "iterations per run",
    "seed": "the first run's seed",
    "methods": "the methods trained",
    "batch_size": "the mini-batch size",
    "eval_points": EVAL_POINTS,
    "train_every": "iterations between the saved training losses",
    "costs": "the runs whose step times and memory these share (default: their own)",
}


def meaning_of(setting, meanings=SETTING_MEANINGS):
    """What a setting means, in words; several settings shown on one row ('a, b') join theirs, and
    a saved run's setting ('plan: lr') reads PLAN_MEANINGS."""
    if setting.startswith("plan: "):
        return PLAN_MEANINGS.get(setting[len("plan: "):], "")
    parts = [meanings.get(name.strip(), "") for name in setting.split(",")]
    return "; ".join(p for p in parts if p)


def glue(name, value, display=False):
    """myst_nb.glue when the book is being built; elsewhere (e.g. Colab) does nothing.

    NumPy and PyTorch scalars become plain Python numbers, so that `{glue:text}` can format them.
    Returns nothing, so that a cell ending with a glue shows no stray value.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string (the key the prose cites), got {name!r}")
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    GLUED[name] = value   # for the chapter's word checks (fglib.book.words)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return None
    myst_glue(name, value, display=display)
    return None


def glue_numbers(prefix, numbers):
    """Glue every number of a result for the prose: {glue:text}`<prefix>_R_f:.3f` etc."""
    for key, value in numbers.items():
        glue(f"{prefix}_{key}", value)


def _device_of(results):
    """The device name a result records (for nested results, the first one's)."""
    if isinstance(results.get("device"), str):
        return results["device"]
    for value in results.values():
        if isinstance(value, dict) and isinstance(value.get("device"), str):
            return value["device"]
    return "CPU"


def results_folder(folder, device):
    """CPU results in `folder`, GPU results beside them in `folder`/gpu: never one over the other."""
    import os
    return folder if device.startswith("CPU") else os.path.join(folder, "gpu")


INDEX = "index.json"          # the list of a results folder's files, for fetching it by URL
BOOK_URL = "FGLIB_BOOK_URL"    # where the book's folder is published raw (the Colab set-up cell sets it)


def save_results(name, results, folder="results", smoke=False):
    """Write a chapter's headline results to <folder>/<name>.json (CPU) or <folder>/gpu/<name>.json
    (GPU, by the device the results record) for the verdict chapter, and refresh the folder's
    index.json (the list that lets a reader without the repository fetch them, see load_results).

    Smoke runs write nothing, so that tests never overwrite the published results. A "minutes" entry
    is left out: how long a sitting took is in its run record (results/runs/<name>.json), and a file
    that changed with every sitting would mark every chapter that reads it stale.
    Returns nothing (so that a notebook cell ending with it shows no output).
    """
    import json
    import os
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a plain file stem such as 'mlp', got {name!r}")
    if not isinstance(results, dict):
        raise TypeError(f"results must be a dict of numbers and strings, got {type(results).__name__}")
    if smoke:
        return None
    results = {k: v for k, v in results.items() if k != "minutes"}
    folder = results_folder(folder, _device_of(results))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    write_index(folder)


def result_files(folder):
    """The results files of a folder (its *.json but the index), sorted."""
    import pathlib
    return sorted(p for p in pathlib.Path(folder).glob("*.json") if p.name != INDEX)


def raw_files(folder):
    """The raw measurements under <folder>/raw/ (fglib.book.runs), as paths relative to the folder, sorted."""
    import pathlib
    root = pathlib.Path(folder)
    return sorted(p.relative_to(root).as_posix() for p in (root / "raw").rglob("*") if p.is_file())


def index_names(folder):
    """What <folder>/index.json lists: the results files, then the raw files."""
    return [p.name for p in result_files(folder)] + raw_files(folder)


def write_index(folder):
    """<folder>/index.json: {name: SHA-256} of the folder's results files and raw files, so that a
    reader who fetches them (fetch_results) can check each one."""
    import json
    import pathlib
    hashes = {name: content_hash(pathlib.Path(folder) / name) for name in index_names(folder)}
    (pathlib.Path(folder) / INDEX).write_text(json.dumps(hashes, indent=1) + "\n")


INPUTS_LOG = "FGLIB_INPUTS_LOG"   # set by tools/book.py while it executes a chapter


def content_hash(path):
    """sha256 of a file, or of a glob pattern's matching files (their names and contents), so that
    a file added to a folder a chapter read also counts as a change."""
    import glob
    import hashlib
    import pathlib
    path = str(path)
    if "*" not in path:
        return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    h = hashlib.sha256()
    for match in sorted(glob.glob(path)):
        h.update(pathlib.Path(match).name.encode() + hashlib.sha256(pathlib.Path(match).read_bytes()).digest())
    return h.hexdigest()


def note_read(paths):
    """Record that a chapter read these results files or glob patterns (with content hashes),
    when a chapter is being executed by tools/book.py: its run record then lists its inputs, and
    the status page can say when one has changed since (the chapter is stale)."""
    import json
    import os
    import pathlib
    log = os.environ.get(INPUTS_LOG)
    if not log:
        return
    with open(log, "a") as f:
        for path in paths:
            path = pathlib.Path(path).absolute()
            if "*" in str(path) or path.is_file():
                f.write(json.dumps({"path": str(path), "sha256": content_hash(path)}) + "\n")


def load_results(folder="results", missing_ok=False):
    """{name: results} for every saved chapter result in `folder` (not its subfolders).

    Where `folder` is not here, nor the folder it lies in (a chapter opened on Colab, or run
    outside the repository), and
    $FGLIB_BOOK_URL names where the book's folder is published (the Colab set-up cell sets it
    from _config.yml), the results are fetched from <url>/<folder>/ by its index.json and kept
    in `folder`. missing_ok=True gives {} for a folder that exists neither here nor there (the
    GPU results before any GPU run).
    """
    import json
    import os
    import pathlib
    if not pathlib.Path(folder).is_dir():
        url = os.environ.get(BOOK_URL)
        outside = not pathlib.Path(pathlib.Path(folder).parts[0]).is_dir()   # no results/ at all: not in the repository
        if url and outside:
            return fetch_results(url, folder, missing_ok)
        if missing_ok:
            return {}
        raise FileNotFoundError(f"folder {folder!r} does not exist: run the chapters first "
                                "(python tools/book.py execute), or pass the folder that holds results/*.json")
    files = result_files(folder)
    note_read(files)
    return {p.stem: read_json(p) for p in files}


def read_json(path):
    """A saved JSON file, or a ValueError naming it when it is damaged (half-written, cut short)."""
    import json
    import pathlib
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged and cannot be read ({type(err).__name__}: {err}): restore it "
                         f"(git checkout -- {path}) or run what wrote it again") from None


FETCH_MAX_BYTES = 64 * 2 ** 20   # the most one fetched file may hold
FETCH_DEADLINE = 600.0           # seconds a whole fetch may take


def fetch_results(url, folder, missing_ok=False, max_bytes=FETCH_MAX_BYTES, deadline=FETCH_DEADLINE):
    """The results of <url>/<folder>/, listed by its index.json, saved into `folder` and returned;
    the raw measurements it lists (raw/...) are saved beside them.

    Every file is checked before anything is written: its name must be a plain relative path inside
    `folder` (a results file `<name>.json`, or one under `raw/`), it may hold at most `max_bytes`,
    the whole fetch must end within `deadline` seconds, and its SHA-256 must be the one index.json
    lists. A file that fails any check stops the fetch with a ValueError naming it; nothing is written.
    """
    import hashlib
    import json
    import pathlib
    import time
    import urllib.error
    base = f"{url.rstrip('/')}/{pathlib.PurePosixPath(folder).as_posix()}"
    ends = time.monotonic() + deadline
    try:
        try:
            index = json.loads(_download(f"{base}/{INDEX}", max_bytes, ends))
        except urllib.error.HTTPError as err:
            if err.code == 404 and missing_ok:   # the folder is not there at all: nothing to fetch
                return {}
            raise
        hashes = _checked_index(index, f"{base}/{INDEX}")
        contents = {}
        for name in hashes:
            try:
                contents[name] = _download(f"{base}/{name}", max_bytes, ends)
            except urllib.error.HTTPError as err:   # a file the index lists is missing: never an empty result
                raise FileNotFoundError(f"{base}/{INDEX} lists {name}, but {base}/{name} could not be read "
                                        f"(HTTP {err.code}); nothing was saved. Try again later") from err
    except urllib.error.HTTPError as err:
        raise FileNotFoundError(f"folder {folder!r} is not here, and {base}/ could not be read (HTTP {err.code}): "
                                "run the chapters first, or check the book's URL in $FGLIB_BOOK_URL") from err
    except FileNotFoundError:   # a listed file missing, said above: not "offline"
        raise
    except (urllib.error.URLError, OSError) as err:
        raise FileNotFoundError(f"folder {folder!r} is not here, and fetching it from {base}/ failed: this machine "
                                f"seems offline ({getattr(err, 'reason', err)}). Connect to the internet, or run the "
                                "chapters first (python tools/book.py execute)") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{base}/{INDEX} is not JSON ({err}): check the book's URL in $FGLIB_BOOK_URL") from None
    for name, content in contents.items():
        if hashlib.sha256(content).hexdigest() != hashes[name]:
            raise ValueError(f"{base}/{name} does not match the SHA-256 its index lists: it changed after the index "
                             "was written, or was damaged on the way; nothing was saved. Try again later")
    results = {}
    for name, content in contents.items():
        if "/" not in name:
            try:
                results[pathlib.Path(name).stem] = json.loads(content)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{base}/{name} is not JSON ({err}); nothing was saved") from None
    root = pathlib.Path(folder)
    for name, content in contents.items():
        _write_inside(root, name, content)
    write_index(folder)
    return results


def _checked_index(index, where):
    """{name: sha256} from a fetched index.json, each name a safe relative path: a results file
    '<stem>.json', or a file under 'raw/' (no '..', no absolute path, no backslash)."""
    import re
    if not isinstance(index, dict):
        raise ValueError(f"{where} is not a map of file names to SHA-256 hashes (got {type(index).__name__}): it was "
                         "written by an older fglib or is not a book's index; check the book's URL in $FGLIB_BOOK_URL")
    for name, digest in index.items():
        parts = name.split("/")
        plain = (re.fullmatch(r"[A-Za-z0-9_.-]+", p) and p not in (".", "..") for p in parts)
        if not (all(plain) and (len(parts) == 1 and name.endswith(".json") or parts[0] == "raw" and len(parts) > 1)
                and name != INDEX):
            raise ValueError(f"{where} lists {name!r}, which is not a results file or a file under raw/ (names are "
                             "relative paths of letters, digits, '_', '-' and '.', without '..'); nothing was fetched")
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise ValueError(f"{where} lists {digest!r} as the SHA-256 of {name!r}, which is not one; nothing was fetched")
    return index


def _download(url, max_bytes, ends):
    """The body of `url`, refused (ValueError) past `max_bytes` or past the monotonic time `ends`."""
    import time
    import urllib.request
    left = ends - time.monotonic()
    if left <= 0:
        raise ValueError(f"fetching {url} did not start before the fetch's deadline: the server is too slow; "
                         "try again later")
    with urllib.request.urlopen(url, timeout=min(30.0, left)) as response:
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise ValueError(f"{url} is {int(length):,} bytes, more than the {max_bytes:,} a results file may hold; "
                             "nothing was fetched")
        chunks, size = [], 0
        while chunk := response.read1(2 ** 16):
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"{url} sent more than the {max_bytes:,} bytes a results file may hold; "
                                 "nothing was fetched")
            if time.monotonic() > ends:
                raise ValueError(f"fetching {url} ran past the fetch's deadline: the server is too slow; "
                                   "try again later")
            chunks.append(chunk)
        return b"".join(chunks)


def _write_inside(root, name, content):
    """Write `content` to root/name atomically, refusing a path that resolves outside `root`."""
    import os
    import tempfile
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{name!r} resolves to {path}, outside {root}: not written")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(handle, "wb") as f:
        f.write(content)
    os.replace(tmp, path)
