"""Every chapter in _toc.yml executes headless with its smoke settings, and is well formed."""
import json
import re
import sys

import pytest
import torch

from conftest import ROOT, data_folder

sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402

CHAPTERS = book.chapters()


def test_toc_lists_chapters():
    assert CHAPTERS, "no .ipynb chapter found in _toc.yml"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_is_well_formed(path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"][0].startswith("# "), "a chapter opens with its title"
    assert "".join(cells[1]["source"]) == book.setup_source(), \
        "the Colab set-up cell is stale or misplaced: run python tools/book.py sync-setup"
    tags = [t for c in cells for t in c.get("metadata", {}).get("tags", [])]
    assert tags.count("parameters") == 1
    params = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    assert "smoke = False" in "".join(params["source"])


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_with_smoke_settings(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FGLIB_DATA", data_folder())
    book.execute([path], "smoke", tmp_path)
    out = json.loads((tmp_path / path.name).read_text())
    errors = [o for c in out["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    warned = ["".join(o["text"]) for c in out["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "stream" and o.get("name") == "stderr" and "Warning" in "".join(o["text"])]
    assert not warned, f"a warning would reach the page (under torch {torch.__version__}): {warned[0][:300]}"
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in out["cells"] for o in c.get("outputs", [])), "the chapter drew no figure"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_parameters_are_checked_right_after_the_parameters_cell(path):
    import ast
    cells = json.loads(path.read_text())["cells"]
    i = next(k for k, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    j = i + 2 if "injected-parameters" in cells[i + 1].get("metadata", {}).get("tags", []) else i + 1
    targets = [t for node in ast.parse("".join(cells[i]["source"])).body if isinstance(node, ast.Assign)
               for t in node.targets]
    names = [n.id for t in targets for n in (t.elts if isinstance(t, ast.Tuple) else [t])]
    call = "".join(cells[j]["source"])
    assert "check_parameters(" in call
    assert not [n for n in names if f"{n}={n}" not in call], "a parameter is not checked"


def test_a_bad_parameter_fails_before_any_data_is_loaded(tmp_path, monkeypatch):
    """An unknown model in the measuring chapter is reported by name, from the check cell."""
    import papermill
    monkeypatch.setenv("FGLIB_DATA", str(tmp_path / "no-data-here"))  # loading data would fail otherwise
    path = next(p for p in CHAPTERS if p.stem == "measuring")
    with pytest.raises(papermill.PapermillExecutionError) as err:
        book.execute([path], "smoke", tmp_path, overrides={"model_name": "resnet"})
    assert "model_name must be one of" in str(err.value)
    assert "load_data" not in str(err.value)


def test_an_unknown_parameter_name_is_refused_before_any_chapter_runs(tmp_path):
    """A typo (seeds=3 for seed=3) stops the tool with the chapter's real parameters named, where
    papermill alone would warn and run the defaults; nothing is executed, even for the chapters
    listed before the one that lacks it. Control: a known name passes the check."""
    paths = [next(p for p in CHAPTERS if p.stem == name) for name in ("verdict", "cnn")]
    with pytest.raises(SystemExit, match=r"cnn has no parameter 'seeds'; its parameters are smoke, seed, device"):
        book.execute(paths[1:], "full", tmp_path, overrides={"seeds": 3})
    with pytest.raises(SystemExit, match="verdict has no parameter 'seed'"):
        book.execute(paths, "full", tmp_path, overrides={"seed": 3})
    assert not list(tmp_path.iterdir())
    with pytest.raises(SystemExit, match="cnn has no parameter 'seeds'"):   # cnn has outputs: missing skips it
        book.execute(paths[1:], "missing", tmp_path, overrides={"seeds": 3})
    book.check_parameter_names(paths[1], {"seed": 3, "smoke": True})


def test_the_librarys_reference_pages_are_generated_from_its_modules():
    """book/reference.md and book/api/*.md are what tools/book.py writes now: one page per module
    the package's docstring lists, each an automodule directive (Sphinx's autodoc renders the
    signatures and docstrings at build time), every module importable, and no page left over."""
    import importlib
    pages = book.reference_pages()
    for path, text in pages.items():
        assert (ROOT / "book" / path).read_text() == text, f"{path} is stale: run python tools/book.py status"
    assert {p.name for p in (ROOT / "book" / "api").glob("*.md")} == {p.split("/")[1] for p in pages if "/" in p}
    for name, _ in book.reference_modules():
        assert importlib.import_module(f"fglib.{name}").__doc__
        assert f".. automodule:: fglib.{name}" in pages[f"api/{name}.md"]
    assert {"lean", "registry", "engine"} <= {name for name, _ in book.reference_modules()}


def test_status_page_is_generated_from_the_run_records():
    """book/status.md is exactly what tools/book.py writes from the run records: never typed."""
    assert (ROOT / "book" / "status.md").read_text() == book.status_text(), \
        "book/status.md is stale: run python tools/book.py status"


def test_the_status_page_names_the_chapter_that_reads_each_long_plan():
    """tools/book.py plan_readers: the CNN chapter reads both CNN plans (the first run too); the
    control, a plan no chapter names, has no reader, so that the status page would show '–'."""
    assert book.plan_readers("cnn_30k") == ["cnn"] and "cnn" in book.plan_readers("cnn")
    assert book.plan_readers("no_such_plan") == []


def test_the_introduction_opens_with_the_verdict_table_and_written_findings():
    """book/intro.md is written by hand: its first section shows the verdict page's table and then
    the findings in sentences, before the book explains anything; every number it quotes is glued
    from the page that measured it (checked by test_every_glued_reference_names_a_value_its_page_glued)."""
    text = (ROOT / "book" / "intro.md").read_text()
    found = text.index("## What we found")
    assert text.index("```{glue} intro_table\n:doc: verdict.ipynb") > found
    assert found < text.index("## The paper in one paragraph")
    assert "generated by python tools/book.py" not in text


GLUE_REFERENCE = re.compile(r"\{glue(?::\w+)?\}`([\w.]+\.ipynb)::(\w+)(?::[^`]*)?`|\{glue\}\s*(\w+)\n:doc:\s*(\S+)")


def _glue_references(text):
    for m in GLUE_REFERENCE.finditer(text):
        yield (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))


def test_every_glued_reference_names_a_value_its_page_glued():
    """A number quoted from another page ({glue:text}`page.ipynb::key:fmt`, or the glue directive
    with :doc:) must be one that page's committed outputs glued; the control, a made-up key, is not."""
    from fglib.book.words import glued_in
    pages = [ROOT / "book" / "intro.md"] + book.chapters()
    refs = set()
    for page in pages:
        text = page.read_text() if page.suffix == ".md" else "\n".join(
            "".join(c["source"]) for c in json.loads(page.read_text())["cells"] if c["cell_type"] == "markdown")
        refs |= set(_glue_references(text))
    assert ("verdict.ipynb", "intro_table") in refs and ("cnn.ipynb", "cnn_rl_holds_from") in refs
    for doc, key in sorted(refs):
        assert key in glued_in(ROOT / "book" / doc), f"{doc} glues nothing as {key!r}"
    assert "no_such_key" not in glued_in(ROOT / "book" / "verdict.ipynb")


def test_no_chapter_quotes_inputs_that_changed_since_it_ran(tmp_path, monkeypatch):
    """A chapter that read other results (saved runs, other chapters' numbers) is stale once one
    of them changes: run it again. The control: a record whose input hash is off is caught."""
    records = [json.loads(p.read_text()) for p in sorted(book.RUNS.glob("*.json"))]
    stale = {r["chapter"]: book.stale_inputs(r) for r in records if book.stale_inputs(r)}
    assert not stale, f"stale chapters (run python tools/book.py execute --mode full CHAPTER): {stale}"
    with_inputs = [r for r in records if r.get("inputs")]
    assert with_inputs, "no chapter has recorded its inputs"
    changed = {**with_inputs[0], "inputs": {k: "0" * 64 for k in with_inputs[0]["inputs"]}}
    assert book.stale_inputs(changed) == list(with_inputs[0]["inputs"])


def test_no_page_calls_a_run_length_the_papers():
    """The paper does not state its run lengths (issue 28's rule): no page may say it does."""
    for path in [*CHAPTERS, *(ROOT / "book").glob("*.md")]:
        text = path.read_text()
        assert "paper's length" not in text and "paper's run length" not in text.replace(
            "does not state its run length", ""), path.name


def test_no_page_says_the_same_seed_gives_the_same_run_on_any_device():
    """Device wording (issue 28): a seed reproduces a run only on the same device type and thread
    count; across devices, only the distribution of runs is the same."""
    import re
    wrong = re.compile(r"same on any device|same runs\s+anywhere|carries over to any device for the same seeds")
    for path in [*CHAPTERS, *(ROOT / "book").glob("*.md")]:
        assert not wrong.search(path.read_text().replace('\\n",\n    "', " ")), path.name


def test_no_chapter_reads_a_saved_result_with_a_silent_default():
    """A saved result read with .get(key, default) hides a key nothing writes: the verdict once
    read results['scaling']['ratio_by_depth'], which no chapter saved, and silently dropped the
    depth sweep from its range. Chapters index saved results (results[...], judged(...)[...]),
    so that a missing key is a KeyError naming it. The control: the old line is caught."""
    import re
    pattern = re.compile(r"(results|judged\([^)]*\))(\[[^\]]*\])*\.get\(")
    assert pattern.search('ratios += list(results.get("scaling", {}).get("ratio_by_depth", {}).values())')
    assert pattern.search('mnist = fglib.book.verdict.judged("results")[0].get("mnist", {})')
    for path in book.chapters():
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                found = pattern.search("".join(cell["source"]))
                assert not found, f"{path.name}: {found.group(0)} reads a saved result with a default"
