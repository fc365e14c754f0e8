"""What every chapter records and shows: device, versions, parameters; numbers glued into prose."""
import platform

import pandas as pd
import torch

from ..device import device_name


def environment(device, **params):
    """A one-column table: device, torch version, Python, and the chapter's parameters."""
    info = {"device": device_name(device), "torch": torch.__version__,
            "python": platform.python_version()}
    info.update({k: repr(v) for k, v in params.items()})
    return pd.DataFrame({"value": info})


def glue(name, value, display=False):
    """myst_nb.glue when the book is being built; elsewhere (e.g. Colab) just returns the value.

    NumPy and PyTorch scalars become plain Python numbers, so that `{glue:text}` can format them.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string (the key the prose cites), got {name!r}")
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return value
    myst_glue(name, value, display=display)
    return value


def glue_numbers(prefix, numbers):
    """Glue every number of a result for the prose: {glue:text}`<prefix>_R_f:.3f` etc."""
    for key, value in numbers.items():
        glue(f"{prefix}_{key}", value)


def save_results(name, results, folder="results", smoke=False):
    """Write a chapter's headline results to <folder>/<name>.json for the verdict chapter.

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
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


def load_results(folder="results"):
    """{name: results} for every saved chapter result."""
    import json
    import pathlib
    if not pathlib.Path(folder).is_dir():
        raise FileNotFoundError(f"folder {folder!r} does not exist: run the chapters first "
                                "(python tools/book.py execute), or pass the folder that holds results/*.json")
    return {p.stem: json.loads(p.read_text()) for p in sorted(pathlib.Path(folder).glob("*.json"))}
