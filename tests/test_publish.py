"""The three ways readers reach the book, checked in seconds (tools/check_publish.py, run by
.ci/run, then runs them for real: the workflow's own build in a fresh environment, the package
installed under its name, and a chapter run as on Colab):

- the publish workflow is valid YAML and valid against GitHub's workflow schema, and installs
  the one list of what the book needs to render, which `make book` installs too;
- the package has a name of its own on the package index, named alike everywhere;
- a chapter run without the repository fetches the saved results it reads from the repository.
"""
import json
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

import fglib
from fglib.book import report

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "pages.yml"
sys.path.insert(0, str(ROOT / "tools"))
import book as book_tool  # noqa: E402
import check_publish  # noqa: E402


def check_jsonschema(path):
    exe = pathlib.Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True)


def test_the_workflow_validates_against_githubs_schema_and_a_broken_one_does_not(tmp_path):
    assert check_jsonschema(WORKFLOW).returncode == 0, check_jsonschema(WORKFLOW).stdout
    broken = tmp_path / "pages.yml"   # the control: the step name that once broke the file
    broken.write_text(WORKFLOW.read_text().replace('name: "Install the book\'s tools (rendering only: no torch needed)"',
                                                   "name: Install the book's tools (rendering only: no torch needed)"))
    assert broken.read_text() != WORKFLOW.read_text()
    done = check_jsonschema(broken)
    assert done.returncode != 0 and "mapping values are not allowed" in done.stdout


def build_steps():
    return [s["run"] for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["build"]["steps"] if "run" in s]


def test_one_list_renders_the_book_for_the_workflow_and_make_book():
    assert "pip install -r requirements-book.txt" in build_steps()[0]
    assert "-r requirements-book.txt" in (ROOT / "requirements.txt").read_text().splitlines()
    pins = {re.split(r"[=<>]", line)[0].strip().lower() for line in (ROOT / "requirements-book.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    for extension in config["sphinx"]["extra_extensions"]:
        if extension.startswith("sphinx.ext."):   # part of Sphinx itself
            continue
        assert extension.replace("_", "-").lower() in pins, f"{extension} is loaded but not installed for the build"
    for name in pins:   # and none of them is pinned a second time elsewhere
        assert not any(line.lower().startswith(name) for line in (ROOT / "requirements.txt").read_text().splitlines())


def test_the_distribution_is_named_alike_everywhere():
    project = (ROOT / "pyproject.toml").read_text()
    name = re.search(r'^name = "([^"]+)"', project, re.M).group(1)
    assert name == book_tool.DISTRIBUTION != "fglib"     # 'fglib' on the package index is another project
    assert f"pip install {name}" in (ROOT / "README.md").read_text()
    assert f'"{name} @ git+{book_tool.repository_url()}"' in book_tool.setup_source()
    assert book_tool.book_url().startswith("https://raw.githubusercontent.com/" + book_tool.repository_url().split("github.com/")[1])


def test_every_chapter_has_the_current_setup_cell():
    for path in book_tool.chapters():
        cells = json.loads(path.read_text())["cells"]
        setup = [c for c in cells if book_tool.SETUP_TAG in c.get("metadata", {}).get("tags", [])]
        assert len(setup) == 1 and "".join(setup[0]["source"]) == book_tool.setup_source(), path.name


def test_each_results_folder_lists_its_files_in_its_index():
    for folder in [ROOT / "book" / "results", ROOT / "book" / "results" / "gpu"]:
        if folder.is_dir():
            listed = json.loads((folder / report.INDEX).read_text())
            assert list(listed) == [p.name for p in report.result_files(folder)] + report.raw_files(folder), folder
            assert all(digest == report.content_hash(folder / name) for name, digest in listed.items()), folder
            assert not folder.name == "results" or any(n.startswith("raw/cnn/") for n in listed)


@pytest.fixture
def served_book():
    """The repository's book/ folder over HTTP, as raw.githubusercontent.com serves it."""
    server = check_publish.serve(ROOT / "book")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_results_are_fetched_where_the_folder_is_not_here(served_book, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(report.BOOK_URL, served_book)
    fetched = fglib.book.load_results("results")
    assert fetched == fglib.book.load_results(ROOT / "book" / "results") and fetched   # and now kept here
    assert (tmp_path / "results" / "unbiasedness.json").exists()
    raw = ROOT / "book" / "results" / "raw" / "cnn" / "timings.csv.gz"
    assert (tmp_path / "results" / "raw" / "cnn" / "timings.csv.gz").read_bytes() == raw.read_bytes()
    assert fglib.book.load_results("results/gpu", missing_ok=True) == {}   # present here: results/ is local now


def test_a_folder_missing_there_too_is_empty_only_when_allowed(served_book, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(report.BOOK_URL, served_book)
    assert fglib.book.load_results("nothing/gpu", missing_ok=True) == {}
    with pytest.raises(FileNotFoundError, match="could not be read \\(HTTP 404\\)"):
        fglib.book.load_results("nothing")


def test_offline_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(report.BOOK_URL, "http://127.0.0.1:9/book")   # the discard port: nothing listens
    with pytest.raises(FileNotFoundError, match="seems offline.*Connect to the internet"):
        fglib.book.load_results("results")


def test_inside_the_repository_nothing_is_fetched(monkeypatch, tmp_path):
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(report.BOOK_URL, "http://127.0.0.1:9/book")
    assert fglib.book.load_results("results/gpu", missing_ok=True) == {}


def test_the_readmes_example_runs_as_written_and_returns_the_table_it_promises():
    """The README's Python example, run as written except on the CPU and for 20 iterations on
    2,000 images: it trains, and its curve has the columns the comment names (a README whose
    example no longer runs is the first thing a new user meets)."""
    text = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    promised = re.search(r"# tidy table: ([\w, ]+)", example).group(1).split(", ")
    runnable = (example.replace('device="cuda"', 'device="cpu"').replace("iterations=1000", "iterations=20")
                .replace('fglib.load_data("mnist", ', 'fglib.load_data("mnist", limit=2000, '))
    assert runnable.count('device="cpu"') == 2 and "iterations=20" in runnable and "limit=2000" in runnable
    scope = {}
    exec(compile(runnable, "README.md", "exec"), scope)
    curve = scope["curve"]
    assert set(promised) <= set(curve.columns) and curve["iteration"].max() == 20
