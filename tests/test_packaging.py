"""fglib as a library: the wheel and sdist build as a release would build them, the core install
pulls no plotting package (what only the book needs is the `book` extra), the version is written
once, the package says it is typed, and the method runs where the book's packages are absent."""
import email
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import pytest

from conftest import ROOT

BOOK_ONLY = ("matplotlib", "seaborn", "tqdm", "tabulate", "torchvision")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The wheel and sdist, built from a copy of what the package is made of, so that the build's
    own folders (build/, *.egg-info) never land in the repository."""
    import shutil
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "fglib", source / "fglib", ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(out),
                          str(source)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return next(out.glob("*.whl")), next(out.glob("*.tar.gz"))


def metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name)), z.namelist()


def test_the_core_install_pulls_no_plotting_package_and_the_book_extra_does(built):
    meta, _ = metadata(built[0])
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    assert not [r for r in core if r.split(">")[0].split("=")[0].split("[")[0].strip() in BOOK_ONLY], core
    assert any(r.startswith("torch") for r in core)
    book = [r for r in requires if 'extra == "book"' in r]
    assert {r.split(";")[0].strip() for r in book} >= {"matplotlib", "seaborn", "tqdm"}   # the control


def test_the_version_is_written_once_and_the_package_is_typed(built):
    import fglib
    meta, names = metadata(built[0])
    assert meta["Version"] == fglib.__version__
    assert "fglib/py.typed" in names and "fglib/book/verdict.py" in names
    with tarfile.open(built[1]) as sdist:
        assert any(n.endswith("fglib/py.typed") for n in sdist.getnames())
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[project]")[1].split("[")[0]


EXAMPLE = textwrap.dedent('''
    import sys

    for name in {blocked!r}:   # the book's packages, as on a core install: import fails, find_spec finds none
        sys.modules[name] = None
    sys.path.insert(0, {wheel!r})
    import torch, torch.nn.functional as F
    import fglib
    assert fglib.__file__.startswith({wheel!r}), fglib.__file__

    class Tiny(torch.nn.Module):   # a custom module, not an nn.Sequential
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(5, 7), torch.nn.Linear(7, 3)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(0)
    model = Tiny().double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    params = dict(model.named_parameters())
    v = [torch.randn_like(p) for p in params.values()]
    loss, d = fglib.module_jvp(model, F.cross_entropy, x, y, v)
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
    exact = sum(float((g * u).sum()) for g, u in zip(grads, v))
    assert abs(float(d) - exact) <= 1e-10 * max(1.0, abs(exact)), (float(d), exact)
    method = fglib.make_method("fg", model, F.cross_entropy, lr=1e-2, seed=0)
    for _ in range(3):
        method.step(x, y)
    try:
        fglib.load_data("mnist")
    except ImportError as err:
        assert "fglib-forward-gradients[data]" in str(err)
    else:
        raise AssertionError("load_data ran without torchvision")
    print("ok")
''')


def test_the_method_runs_from_the_wheel_without_the_books_packages(built, tmp_path):
    """The wheel unpacked alone on the path, the book's packages made unimportable: a forward
    gradient of a custom module equals backprop's gradient along the same v (float64), training
    steps run, and load_data says which extra it needs. The control: the blocker really blocks."""
    with zipfile.ZipFile(built[0]) as z:
        z.extractall(tmp_path / "wheel")
    code = EXAMPLE.format(blocked=BOOK_ONLY, wheel=str(tmp_path / "wheel"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
    control = code.replace('print("ok")', "import matplotlib")
    run = subprocess.run([sys.executable, "-c", control], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode != 0 and "import of matplotlib halted" in run.stderr
