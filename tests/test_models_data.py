"""The paper's models (sizes) and the data (the known facts of MNIST)."""
import urllib.error

import pytest
import torch
import torchvision

import fglib
from fglib.models import count_parameters


@pytest.mark.parametrize("name,kwargs,count", [
    ("logreg", {}, 7_850),
    ("mlp", {}, 1_863_690),
    ("cnn", {}, 640 + 3 * 36_928 + 1_049_600 + 10_250),
    ("deep", {"depth": 1}, 784 * 1024 + 1024 * 10),
    ("deep", {"depth": 100}, 784 * 1024 + 99 * 1024 * 1024 + 1024 * 10),
])
def test_parameter_counts_and_output_shapes(name, kwargs, count):
    model = fglib.build_model(name, **kwargs)
    assert count_parameters(model) == count
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_deep_mlp_has_no_bias():
    assert all(p.ndim == 2 for p in fglib.build_model("deep", depth=4).parameters())


def test_same_seed_same_initial_weights():
    a, b = fglib.build_model("mlp", seed=3), fglib.build_model("mlp", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_mnist_facts(mnist):
    assert [len(mnist[s]) for s in ("train", "validation", "test")] == [50_000, 10_000, 10_000]
    assert mnist["train"].x.shape[1:] == (1, 28, 28)
    assert mnist["train"].y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist["test"].y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    raw = torch.cat([mnist[s].x for s in ("train", "validation")])  # normalised
    assert raw.mean().item() == pytest.approx(0, abs=1e-5)
    assert raw.std().item() == pytest.approx(1, abs=1e-4)


def test_pixel_mean_before_normalisation(mnist):
    from conftest import data_folder
    images = torchvision.datasets.MNIST(data_folder(), train=True, download=True).data
    assert (images.double() / 255).mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert (images.double() / 255).std().item() == pytest.approx(0.3081, abs=5e-5)


def test_sampler_is_seeded_and_covers_the_epoch(mnist):
    a = fglib.BatchSampler(mnist["validation"], 100, seed=1)
    b = fglib.BatchSampler(mnist["validation"], 100, seed=1)
    c = fglib.BatchSampler(mnist["validation"], 100, seed=2)
    first = [next(a)[1] for _ in range(100)]
    assert all(torch.equal(x, next(b)[1]) for x in first)
    assert not torch.equal(first[0], next(c)[1])
    assert torch.equal(torch.cat(first).bincount(), mnist["validation"].y.bincount())


def test_missing_data_without_network_says_where(tmp_path, monkeypatch):
    def no_network(self):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_network)
    with pytest.raises(FileNotFoundError, match=r"MNIST[/\\]raw.*FGLIB_DATA"):
        fglib.load_data("mnist", root=tmp_path)


def test_data_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FGLIB_DATA", str(tmp_path / "elsewhere"))
    assert fglib.data.data_root() == str(tmp_path / "elsewhere")
    assert fglib.data.data_root("given") == "given"


def test_device_auto_picks_the_gpu_when_there_is_one_else_the_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(fglib.build_model("logreg", device="auto").parameters()).device.type == want
    assert fglib.load_data("mnist", device="auto", limit=4)["train"].x.device.type == want


def idx(path, magic, dims, fill=None, cut=None):
    """An IDX file of the given dimensions, every data byte `fill` (default: bytes cycling through
    0-255, as varied pixels), optionally cut to `cut` bytes."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    count = 1
    for d in dims:
        count *= d
    body = bytes(range(256)) * (count // 256 + 1) if fill is None else bytes([fill]) * (count + 1)
    data = header + body[:count]
    path.write_bytes(data[:cut])


def fake_mnist(root, label=3, cut=None, fill=None):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        idx(raw / f"{prefix}-images-idx3-ubyte", 0x0803, (n, 28, 28), fill=fill, cut=cut if prefix == "train" else None)
        idx(raw / f"{prefix}-labels-idx1-ubyte", 0x0801, (n,), fill=label)
    return raw


def test_a_truncated_idx_file_is_named_not_reported_missing(tmp_path):
    raw = fake_mnist(tmp_path, cut=1000)
    with pytest.raises(ValueError, match=f"{raw / 'train-images-idx3-ubyte'} is not a complete IDX file.*truncated"):
        fglib.load_data("mnist", root=tmp_path)


def test_a_wrong_magic_number_is_named(tmp_path):
    raw = fake_mnist(tmp_path)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + (raw / "t10k-labels-idx1-ubyte").read_bytes()[4:])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte is not a complete IDX file.*magic number 0x0803"):
        fglib.load_data("mnist", root=tmp_path)


def test_label_bytes_outside_0_to_9_are_named(tmp_path):
    fake_mnist(tmp_path, label=12)
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte holds labels outside 0-9"):
        fglib.load_data("mnist", root=tmp_path)
    control = tmp_path / "good"
    fake_mnist(control, label=3)
    assert set(fglib.load_data("mnist", root=control)["train"].y.tolist()) == {3}


def test_a_header_with_other_dimensions_is_named(tmp_path):
    """14 x 56 images have 28 x 28's byte count: only the header tells them apart."""
    raw = fake_mnist(tmp_path)
    idx(raw / "t10k-images-idx3-ubyte", 0x0803, (10_000, 14, 56), fill=7)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte is not a complete IDX file.*dimensions \(10000, 14, 56\)"):
        fglib.load_data("mnist", root=tmp_path)


def test_images_whose_pixels_are_all_alike_are_named_not_normalised_to_nan(tmp_path):
    fake_mnist(tmp_path, fill=0)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte holds images whose pixels are all 0"):
        fglib.load_data("mnist", root=tmp_path)


def test_a_file_whose_sha256_differs_from_the_folders_sums_is_named(tmp_path):
    """One flipped pixel passes every structural check: the folder's SHA256SUMS catches it.
    Control: the same folder with the right sums loads."""
    import hashlib
    raw = fake_mnist(tmp_path)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  MNIST/raw/{p.name}\n" for p in sorted(raw.iterdir())]
    (tmp_path / "SHA256SUMS").write_text("".join(lines))
    assert len(fglib.load_data("mnist", root=tmp_path, limit=4)["train"]) == 4
    path = raw / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[5000] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte has SHA-256 .* listed in .*SHA256SUMS"):
        fglib.load_data("mnist", root=tmp_path)


def test_a_split_needs_one_label_per_image():
    from fglib.data import Split
    with pytest.raises(ValueError, match="x holds 5 images, y 4 labels"):
        Split(torch.zeros(5, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    assert len(Split(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))) == 4


@pytest.fixture(scope="module")
def summed_mnist(tmp_path_factory):
    """A fake MNIST folder with its SHA256SUMS, and the splits it loads to."""
    import hashlib
    root = tmp_path_factory.mktemp("summed")
    raw = fake_mnist(root)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  MNIST/raw/{p.name}\n" for p in sorted(raw.iterdir())]
    (root / "SHA256SUMS").write_text("".join(lines))
    return root, fglib.load_data("mnist", root=root, limit=50)


def test_a_damaged_idx_file_gives_its_data_or_an_error_naming_it(summed_mnist, tmp_path):
    """Random truncations and byte flips of each IDX file (a property test, drawn with hypothesis):
    load_data gives the saved images and labels exactly, or a ValueError naming the file; never
    other numbers. (The control that flips pass unnoticed without the sums is
    test_a_file_whose_sha256_differs_from_the_folders_sums_is_named.)"""
    import shutil
    import hypothesis
    from hypothesis import strategies as st
    root, want = summed_mnist

    @hypothesis.settings(max_examples=12, deadline=None)
    @hypothesis.given(file=st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
                      cut=st.booleans(), at=st.floats(0, 0.999), mask=st.integers(1, 255))
    def damaged(file, cut, at, mask):
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(root, copy)
        path = copy / "MNIST" / "raw" / file
        data = bytearray(path.read_bytes())
        i = int(at * len(data))
        if cut:
            data = data[:i]
        else:
            data[i] ^= mask
        path.write_bytes(bytes(data))
        try:
            got = fglib.load_data("mnist", root=copy, limit=50)
        except ValueError as err:
            assert file in str(err)
        else:
            assert all(torch.equal(got[k].x, want[k].x) and torch.equal(got[k].y, want[k].y) for k in want)

    damaged()
