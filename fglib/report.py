"""What every chapter records and shows: device, versions, parameters; numbers glued into prose."""
import platform

import pandas as pd
import torch


def resolve_device(device="auto"):
    """'auto' picks the GPU when there is one, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return device


def device_name(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


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
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return value
    myst_glue(name, value, display=display)
    return value


def save_results(name, results, folder="results", smoke=False):
    """Write a chapter's headline results to <folder>/<name>.json for the verdict chapter.

    Smoke runs write nothing, so that tests never overwrite the published results.
    Returns nothing (so that a notebook cell ending with it shows no output).
    """
    import json
    import os
    if smoke:
        return None
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


def load_results(folder="results"):
    """{name: results} for every saved chapter result."""
    import json
    import pathlib
    return {p.stem: json.loads(p.read_text()) for p in sorted(pathlib.Path(folder).glob("*.json"))}
