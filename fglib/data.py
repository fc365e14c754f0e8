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
import os
from dataclasses import dataclass

import torch

from . import checks

DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
N_VALIDATION = 10_000


def data_root(root=None):
    """The folder that holds (or will hold) the data: root, else $FGLIB_DATA, else 'data'."""
    return os.fspath(root or os.environ.get("FGLIB_DATA") or "data")


def _load_split(name, root, train):
    from torchvision import datasets
    cls = getattr(datasets, DATASETS[name])
    try:
        ds = cls(root, train=train, download=True)
    except Exception as err:  # no network, or files neither there nor downloadable
        folder = os.path.join(os.path.abspath(root), DATASETS[name], "raw")
        raise FileNotFoundError(
            f"could not find or download {DATASETS[name]}: the four IDX files should be in {folder}. "
            "Download them there, or point fglib at a folder that has them with the `root` "
            f"argument or the FGLIB_DATA environment variable. ({type(err).__name__}: {err})"
        ) from err
    return ds.data, ds.targets


@dataclass
class Split:
    x: torch.Tensor  # (N, 1, 28, 28), normalised
    y: torch.Tensor  # (N,), int64 labels

    def __len__(self):
        return len(self.y)


def load_data(name="mnist", root=None, device="cpu", dtype=torch.float32, limit=None):
    """{'train', 'validation', 'test'} -> Split, all on `device`.

    `limit` keeps only the first that many images of each split (for quick checks).
    """
    checks.choice("name", name, DATASETS)
    checks.device("device", device)
    checks.floating_dtype("dtype", dtype)
    limit = checks.optional_count("limit", limit)
    root = data_root(root)
    train_x, train_y = _load_split(name, root, train=True)
    test_x, test_y = _load_split(name, root, train=False)
    scale = lambda x: x.to(torch.float64).div(255.0).unsqueeze(1)
    train_x, test_x = scale(train_x), scale(test_x)
    mean, std = train_x.mean(), train_x.std()
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
        self.generator = torch.Generator().manual_seed(checks.seed("seed", seed))
        self._order, self._pos = None, len(split)

    def __iter__(self):
        return self

    def __next__(self):
        if self._pos + self.batch_size > len(self.split):
            self._order = torch.randperm(len(self.split), generator=self.generator)
            self._order = self._order.to(self.split.y.device)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.split.x[idx], self.split.y[idx]
