"""A training run's saved state: written atomically, checked when read, never run as code.

A checkpoint file is one header line and a PyTorch payload:

    FGLIB-CHECKPOINT 1 <sha256 of the payload>\\n<torch.save bytes>

It is read with `torch.load(..., weights_only=True)`, which unpickles tensors, numbers, strings,
lists and dicts only: a checkpoint cannot run code when it is loaded. The SHA-256 catches a file
cut short or changed since it was written. Writing goes to a temporary file of a unique name in
the same folder, then `os.replace`: a stop mid-write, or another process writing at the same
time, leaves either the old file or the new one, never a mix. `lock` holds a run's checkpoint
for one process at a time.
"""
import hashlib
import io
import os
import pickle
import tempfile
import zipfile

import filelock
import torch

MAGIC = b"FGLIB-CHECKPOINT 1 "


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely, or that belongs to another run."""


def save(path, state):
    """Write `state` (tensors, numbers, strings, lists and dicts) to `path` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    _write(path, MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def copy(source, target):
    """Copy checkpoint `source` to `target` byte for byte, atomically, once `source` is checked
    (load's checks: its hash, and nothing in it that could run code)."""
    load(source, map_location="cpu")
    with open(source, "rb") as f:
        _write(target, f.read())


def _write(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _refuse(path, why):
    return CheckpointError(f"checkpoint {os.fspath(path)!r} {why}. Delete the file to start the run again from "
                           "iteration 0, or pass the checkpoint that belongs to this run")


def _payload(path, data):
    """The torch payload of a checkpoint's bytes, its hash checked; a file from before the header
    (a bare torch zip archive) is read as it is (still without running code)."""
    if data.startswith(MAGIC):
        header, _, payload = data.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != header[len(MAGIC):]:
            raise _refuse(path, "does not match the SHA-256 it was written with: it was cut short or changed "
                                "after it was written")
        return payload
    if data.startswith(b"PK"):
        return data
    raise _refuse(path, "is not an fglib checkpoint (no checkpoint header and not a PyTorch file)"
                        if data else "is empty")


def load(path, map_location=None):
    """The state saved in `path`, checked against its SHA-256 and loaded without running code.

    Raises CheckpointError, naming the file, for a file that is empty, cut short, changed since
    it was written, not a checkpoint, or holds anything but tensors, numbers, strings, lists and
    dicts (a pickled object that would run code when loaded is refused, not run).
    `map_location` as torch.load's (None: each tensor back on the device it was saved from).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise _refuse(path, f"cannot be read ({err.strerror or err})") from err
    payload = _payload(path, data)
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refuse(path, "holds objects that are not tensors, numbers, strings, lists or dicts, and is not "
                            "loaded, since loading them could run code") from err
    except (EOFError, RuntimeError, OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        raise _refuse(path, f"is damaged and cannot be read ({type(err).__name__})") from err
    if not isinstance(state, dict):
        raise _refuse(path, f"holds a {type(state).__name__}, not a run's state")
    return state


def lock(path):
    """A lock on the run whose checkpoint is `path` (a `.lock` file beside it), held with `with`;
    a second process asking for it gets CheckpointError at once, not a race on the file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return _Lock(path)


class _Lock:
    def __init__(self, path):
        self.path, self.lock = os.fspath(path), filelock.FileLock(f"{os.fspath(path)}.lock", timeout=0)

    def __enter__(self):
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise CheckpointError(f"checkpoint {self.path!r} is in use by another process (it holds "
                                  f"{self.path}.lock): wait for that run to finish, or stop it first") from None
        return self

    def __exit__(self, *exc):
        self.lock.release()
