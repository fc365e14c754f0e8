"""What every chapter records and shows: device, versions, parameters; numbers glued into prose."""
import platform

import pandas as pd
import torch

from ..device import device_name


def plain_value(value):
    """A setting as a reader writes it: lists joined by commas, no quotes around names."""
    if isinstance(value, (list, tuple)):
        return ", ".join(plain_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {plain_value(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def environment(device, **params):
    """A table of settings: device, torch version, Python, and the chapter's parameters
    (show it with fglib.book.tables.show)."""
    info = {"device": device_name(device), "torch": torch.__version__,
            "python": platform.python_version()}
    info.update({k: plain_value(v) for k, v in params.items()})
    return pd.DataFrame({"setting": list(info), "value": list(info.values())})


def glue(name, value, display=False):
    """myst_nb.glue when the book is being built; elsewhere (e.g. Colab) does nothing.

    NumPy and PyTorch scalars become plain Python numbers, so that `{glue:text}` can format them.
    Returns nothing, so that a cell ending with a glue shows no stray value.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string (the key the prose cites), got {name!r}")
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
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


def save_results(name, results, folder="results", smoke=False):
    """Write a chapter's headline results to <folder>/<name>.json (CPU) or <folder>/gpu/<name>.json
    (GPU, by the device the results record) for the verdict chapter.

    Smoke runs write nothing, so that tests never overwrite the published results.
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
    folder = results_folder(folder, _device_of(results))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


def load_results(folder="results"):
    """{name: results} for every saved chapter result in `folder` (not its subfolders)."""
    import json
    import pathlib
    if not pathlib.Path(folder).is_dir():
        raise FileNotFoundError(f"folder {folder!r} does not exist: run the chapters first "
                                "(python tools/book.py execute), or pass the folder that holds results/*.json")
    return {p.stem: json.loads(p.read_text()) for p in sorted(pathlib.Path(folder).glob("*.json"))}
