"""MNIST and Fashion-MNIST as tensors on one device, with a seeded mini-batch sampler.

Split (the paper does not state one): the last 10,000 of the 60,000 training
images are held out for validation, the first 50,000 train; the official
10,000 test images are the test set. Pixels are scaled to [0, 1] and then
normalised with the training images' mean and standard deviation
(0.1307 and 0.3081 for MNIST).

The data folder is the `root` argument, else the FGLIB_DATA environment
variable, else ./data (relative to the working directory); torchvision downloads
into it when the files are missing and the network is there.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

from . import checks
from .device import resolve_device

DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
N_VALIDATION = 10_000


def data_root(root=None):
    """The folder that holds (or will hold) the data: root, else $FGLIB_DATA, else 'data'."""
    return os.fspath(root or os.environ.get("FGLIB_DATA") or "data")


# IDX files: a 4-byte magic number (0x0801 labels, 0x0803 images), one 4-byte size per dimension, then bytes
IDX_FILES = {  # (file, magic, dimensions)
    True: [("train-images-idx3-ubyte", 0x0803, (60_000, 28, 28)), ("train-labels-idx1-ubyte", 0x0801, (60_000,))],
    False: [("t10k-images-idx3-ubyte", 0x0803, (10_000, 28, 28)), ("t10k-labels-idx1-ubyte", 0x0801, (10_000,))],
}
SUMS_FILE = "SHA256SUMS"   # `sha256sum` lines, paths relative to the data folder, e.g. MNIST/raw/t10k-images-idx3-ubyte


def check_idx_files(folder, train):
    """Each IDX file already in `folder` has its magic number, its dimensions (n, 28, 28) or (n,)
    in the header, and its full size; otherwise a ValueError naming the file (a truncated download
    would otherwise read as 'not found', a header of 14 x 56 as 14 x 56 images)."""
    for file, magic, dims in IDX_FILES[train]:
        path = os.path.join(folder, file)
        if not os.path.exists(path):
            continue   # torchvision downloads what is missing
        with open(path, "rb") as f:
            head = f.read(4 + 4 * len(dims))
        found = int.from_bytes(head[:4], "big")
        shape = tuple(int.from_bytes(head[i:i + 4], "big") for i in range(4, len(head), 4))
        size, want = os.path.getsize(path), len(head) + _count(dims)
        if found != magic or size != want or shape != dims:
            raise ValueError(f"{path} is not a complete IDX file (magic number {found:#06x}, dimensions {shape}, "
                             f"{size:,} bytes; expected {magic:#06x}, {dims} and {want:,} bytes): it is truncated or "
                             "corrupted. Delete it so that it is downloaded again, or replace it with the official file.")


def _count(dims):
    n = 1
    for d in dims:
        n *= d
    return n


def check_sums(root, name, train):
    """Each IDX file of data set `name`'s split that `root`/SHA256SUMS lists has the SHA-256 listed there (a
    folder without that file is not checked); otherwise a ValueError naming the file."""
    sums_path = os.path.join(root, SUMS_FILE)
    if not os.path.exists(sums_path):
        return
    with open(sums_path) as f:
        listed = {line.split(maxsplit=1)[1].strip().lstrip("*"): line.split()[0] for line in f if line.strip()}
    for file, _, _ in IDX_FILES[train]:
        relative = f"{DATASETS[name]}/raw/{file}"
        path = os.path.join(root, relative)
        if relative not in listed or not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            found = hashlib.file_digest(f, "sha256").hexdigest()
        if found != listed[relative]:
            raise ValueError(f"{path} has SHA-256 {found[:12]}..., not the {listed[relative][:12]}... listed in "
                             f"{sums_path}: the file is corrupted. Replace it with the official file.")


def _load_split(name, root, train):
    try:
        from torchvision import datasets
    except ImportError as err:
        raise ImportError("fglib.load_data reads MNIST and Fashion-MNIST with torchvision, which is not installed: "
                          "pip install 'fglib-forward-gradients[data]' (or torchvision itself)") from err
    cls = getattr(datasets, DATASETS[name])
    raw = os.path.join(os.path.abspath(root), DATASETS[name], "raw")
    check_idx_files(raw, train)
    check_sums(root, name, train)
    try:
        ds = cls(root, train=train, download=True)
    except Exception as err:  # no network, or files neither there nor downloadable
        folder = os.path.join(os.path.abspath(root), DATASETS[name], "raw")
        raise FileNotFoundError(
            f"could not find or download {DATASETS[name]}: the four IDX files should be in {folder}. "
            "Download them there, or point fglib at a folder that has them with the `root` "
            f"argument or the FGLIB_DATA environment variable. ({type(err).__name__}: {err})"
        ) from err
    if len(ds.targets) and not 0 <= int(ds.targets.min()) <= int(ds.targets.max()) <= 9:
        raise ValueError(f"{os.path.join(raw, IDX_FILES[train][1][0])} holds labels outside 0-9 (from "
                         f"{int(ds.targets.min())} to {int(ds.targets.max())}): the file is corrupted; replace it with "
                         "the official one")
    return ds.data, ds.targets


@dataclass
class Split:
    x: torch.Tensor  # (N, 1, 28, 28), normalised
    y: torch.Tensor  # (N,), int64 labels

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"a Split needs one label per image: x holds {len(self.x)} images, y {len(self.y)} labels")

    def __len__(self):
        return len(self.y)


def check_split(name, split):
    """A Split (x, y), as load_data returns; a plain (x, y) tuple is told how to become one."""
    if not isinstance(split, Split):
        raise TypeError(f"{name} must be a fglib.data.Split (x, y), as fglib.load_data returns, got "
                        f"{type(split).__name__}; wrap your tensors: fglib.data.Split(x, y)")
    return split


def load_data(name: str = "mnist", root: str | os.PathLike | None = None, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32, limit: int | None = None) -> dict[str, Split]:
    """{'train', 'validation', 'test'} -> Split, all on `device`.

    `limit` keeps only the first that many images of each split (for quick checks).
    """
    checks.choice("name", name, DATASETS)
    device = resolve_device(device)   # 'auto': the GPU when there is one
    checks.floating_dtype("dtype", dtype)
    limit = checks.optional_count("limit", limit)
    root = data_root(root)
    train_x, train_y = _load_split(name, root, train=True)
    test_x, test_y = _load_split(name, root, train=False)
    scale = lambda x: x.to(torch.float64).div(255.0).unsqueeze(1)
    train_x, test_x = scale(train_x), scale(test_x)
    mean, std = train_x.mean(), train_x.std()
    if not std > 0:   # every pixel alike: normalising would give NaN
        raise ValueError(f"{os.path.join(os.path.abspath(root), DATASETS[name], 'raw', IDX_FILES[True][0][0])} holds "
                         f"images whose pixels are all {float(mean) * 255:.0f}: the file is corrupted; replace it with "
                         "the official one")
    norm = lambda x: ((x - mean) / std).to(device=device, dtype=dtype)
    n_train = len(train_y) - N_VALIDATION
    splits = {
        "train": (train_x[:n_train], train_y[:n_train]),
        "validation": (train_x[n_train:], train_y[n_train:]),
        "test": (test_x, test_y),
    }
    return {k: Split(norm(x[:limit]), y[:limit].to(device)) for k, (x, y) in splits.items()}


class BatchSampler:
    """Endless seeded mini-batches: a fresh random permutation of the split each epoch.

    The same seed gives the same sequence of batches, so two methods given the same
    seed see the same data in the same order.
    """

    def __init__(self, split, batch_size=64, seed=0):
        batch_size = checks.integer("batch_size", batch_size, minimum=1, maximum=len(split))
        self.split, self.batch_size = split, batch_size
        self.seed = checks.seed("seed", seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._order, self._pos = None, len(split)

    def __iter__(self):
        return self

    def state_dict(self):
        """Where the sampler stands: its generator, this epoch's order and the position in it."""
        return {"generator": self.generator.get_state(), "order": self._order, "pos": self._pos}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self._order, self._pos = state["order"], state["pos"]

    def __next__(self):
        if self._pos + self.batch_size > len(self.split):
            self._order = torch.randperm(len(self.split), generator=self.generator)
            self._order = self._order.to(self.split.y.device)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.split.x[idx], self.split.y[idx]
