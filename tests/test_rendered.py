"""The book as a reader sees it: the HTML built from the committed notebooks (nothing is
executed) builds without a Sphinx warning, and no page shows a warning, a traceback, an
unrendered glue role, a NaN, stray output on stderr, or a raw Python value printed after a
cell."""
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from bs4 import BeautifulSoup

from conftest import ROOT

RAW_REPR = re.compile(r"^\s*(np\.\w+\(.*\)|<Figure size.*|<matplotlib\..*|<Axes.*|'[^']*'|\"[^\"]*\"|"
                      r"[-+]?\d[\d_]*(\.\d*)?(e[-+]?\d+)?|\(.*\)|\[.*\]|None|True|False)\s*$", re.S)
WARNING_NAME = re.compile(r"\b[A-Z][A-Za-z]*Warning\b")
NAN = re.compile(r"\bnan\b", re.I)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    jb = shutil.which("jupyter-book", path=str(pathlib.Path(sys.executable).parent)) or "jupyter-book"
    run = subprocess.run([jb, "build", str(ROOT), "--path-output", str(out), "--builder", "html", "-W", "-n",
                          "--keep-going"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"the book does not build cleanly:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    html = out / "_build" / "html" / "book"
    return {p.stem: BeautifulSoup(p.read_text(), "html.parser") for p in sorted(html.glob("*.html"))}


def outputs(page):
    return page.select("div.cell_output")


def problems(name, page):
    found = []
    text = page.get_text(" ")
    if "Traceback (most recent call last)" in text:
        found.append("a traceback")
    if "{glue" in text:
        found.append("an unrendered {glue} role")
    for out in outputs(page):
        shown = out.get_text(" ")
        if WARNING_NAME.search(shown):
            found.append(f"a warning: {WARNING_NAME.search(shown).group(0)}")
        if out.select(".stderr"):
            found.append(f"output on stderr: {out.select('.stderr')[0].get_text()[:80]!r}")
        if NAN.search(shown):
            found.append(f"a NaN in an output: {shown.strip()[:80]!r}")
        for block in out.select("div.text_plain, div.output.text_plain"):
            value = block.get_text()
            if RAW_REPR.match(value):
                found.append(f"a raw value printed after a cell: {value.strip()[:60]!r}")
    return [f"{name}: {p}" for p in found]


def test_every_page_reads_clean(pages):
    assert pages, "no page was built"
    found = [p for name, page in pages.items() for p in problems(name, page)]
    assert not found, "\n".join(found)


def test_maths_is_served_from_the_build(pages):
    scripts = [s.get("src", "") for page in pages.values() for s in page.select("script")]
    mathjax = [s for s in scripts if "mathjax" in s.lower()]
    assert mathjax and not [s for s in mathjax if s.startswith("http")], mathjax


def test_the_checks_catch_what_they_look_for():
    """The control: a page with each fault is flagged."""
    bad = BeautifulSoup(
        '<div class="cell_output"><div class="output text_plain"><pre>np.float64(0.0)</pre></div>'
        '<div class="output stderr"><pre>FutureWarning: x</pre></div>'
        '<div class="output text_html"><table><td>nan</td></table></div></div><p>{glue:text}`x`</p>',
        "html.parser")
    found = " ".join(problems("bad", bad))
    for what in ("raw value", "stderr", "NaN", "glue", "warning"):
        assert what in found, what
