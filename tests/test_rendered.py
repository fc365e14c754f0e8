"""The book as a reader sees it: the HTML built from the committed notebooks (nothing is
executed) builds without a Sphinx warning, and no page shows a warning, a traceback, an
unrendered glue role, a NaN, stray output on stderr, or a raw Python value printed after a
cell."""
import math
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
ZERO_SPREAD = re.compile(r"±\s*0\.0+(?![0-9]*[1-9])")   # "± 0.00": a spread that rounded away
PADDED_EXPONENT = re.compile(r"\de(\+|-?0)\d")   # 9.7e-05 or 2.5e+12, as Python formats them
DECIMAL = re.compile(r"(?<![\w.,])\d+\.\d+(?![\w.])")
MAX_TABLE_COLUMNS = 7   # fglib.book.tables.MAX_COLUMNS: wider tables are folded away
VERDICT_WORDS = ("What we found", "holds", "does not hold", "not judged", "partly")
# Results pages open with their findings before any code toggle.
FINDINGS_FIRST = {"intro", "cnn", "logreg", "mlp", "mlp_long", "verdict", "scaling", "test_functions", "unbiasedness", "distributed", "lr_sweep", "variance",
                  "zeroth_order", "finetune", "local_losses", "implementations", "optimisers"}
# Chapters that run something show their settings (device, torch, every parameter), folded away.
SETTINGS_SHOWN = FINDINGS_FIRST - {"intro"} | {"forward_reverse", "measuring"}


def significant_figures(number):
    """Significant figures of a decimal as written: '0.0570' -> 3, '2.30258' -> 6."""
    digits = number.replace(".", "").lstrip("0")
    return len(digits)


def findings_first(page):
    """Whether a verdict word or 'What we found' comes before the page's first code cell."""
    article = page.select_one("article") or page
    before = []
    for element in article.find_all(True):
        if "cell" in element.get("class", []):
            break
        if element.name in ("p", "li"):
            before.append(element.get_text(" "))
    return any(word in " ".join(before) for word in VERDICT_WORDS)
# A chapter shows its code only where the code is the point (tagged show-input); every other
# cell's code is folded behind a toggle (hide-input, hide-cell) or left out of the page.
FOLDED = {"tag_hide-input", "tag_hide-cell", "tag_show-input"}
# A Markdown table shown as text: its rule row, with dashes the typographer may have turned into – or —.
# "Flügel et al. [Flügel et al., 2025]": an author named in the prose and again in a parenthetical
# citation; {cite:t} writes "Flügel et al. [2025]".
CITED_TWICE = re.compile(r"(\w+) et al\.\s*\[\1 et al\., \d{4}\]")
UNRENDERED_TABLE = re.compile(r"^\s*\|.*\|\s*:?[-–—]+:?\s*\|", re.S)


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
    for pasted in page.select(".pasted-text"):  # a number glued into the prose
        if NAN.search(pasted.get_text()):
            found.append(f"a NaN glued into the prose: {pasted.parent.get_text(' ')[:80]!r}")
        if pasted.find_parent(["strong", "b"]):
            found.append(f"a glued sentence in bold: {pasted.get_text()[:60]!r}")
        if PADDED_EXPONENT.search(pasted.get_text()):   # the tables write 9.7e-5 (book/_ext/exponents.py)
            found.append(f"a padded exponent glued into the prose: {pasted.get_text()!r}")
    if CITED_TWICE.search(text):
        found.append(f"an author named twice (use {{cite:t}}): {CITED_TWICE.search(text).group(0)!r}")
    if ZERO_SPREAD.search(text):
        found.append(f"a spread shown as zero: {text[ZERO_SPREAD.search(text).start() - 30:][:60]!r}")
    for cell in page.select("td"):
        if cell.get_text().strip() in ("None", "nan", "NaN", "inf"):
            found.append(f"a table cell reading {cell.get_text().strip()}")
    for para in page.select("p"):
        if para.find_parent(class_=re.compile("cell_output|citation|bibliography")) is None:
            for number in DECIMAL.findall(para.get_text()):
                if significant_figures(number) > 4:
                    found.append(f"a number with more than 4 significant figures in prose: {number}")
    if name in FINDINGS_FIRST and not findings_first(page):
        found.append("no findings before the first code cell")
    if name in SETTINGS_SHOWN and not any(td.get_text().strip() == "torch" for td in page.select("td")):
        found.append("no settings table (a display() around show(fglib.book.environment(...)) not last in its cell?)")
    for table in page.select("table"):
        columns = len(table.select("thead th")) or len(table.select("tr")[0].select("th, td")) if table.select("tr") else 0
        if columns > MAX_TABLE_COLUMNS and table.find_parent("details") is None:
            found.append(f"a table of {columns} columns on show (at most {MAX_TABLE_COLUMNS} fit a phone): "
                         f"{table.get_text(' ')[:60]!r}")
    for para in page.select("p, li"):
        if "$" in para.get_text() and para.find_parent(class_=re.compile("cell_input|highlight")) is None:
            found.append(f"a stray $ in prose (maths that did not render): {para.get_text()[:60]!r}")
    for para in page.select("p"):
        if UNRENDERED_TABLE.match(para.get_text()):
            found.append(f"a Markdown table that did not render: {para.get_text()[:60]!r}")
    for cell in page.select("div.cell"):
        if cell.select("div.cell_input") and not FOLDED & set(cell.get("class", [])):
            code = cell.select("div.cell_input")[0].get_text(" ").strip()
            found.append(f"code on show (tag it hide-input, or show-input if it is the point): {code[:60]!r}")
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
        '<div class="output text_html"><table><td>nan</td></table></div></div><p>{glue:text}`x`</p>'
        '<div class="cell tag_parameters"><div class="cell_input"><pre>runs = 3</pre></div></div>'
        '<p>| a | b ||x|| |\n|:--|--:|\n| 1 | 2 |</p>'
        '<p>I = <span class="pasted-text">nan</span> times</p>'
        '<p><strong>so <span class="pasted-text">it holds</span></strong>, ratio 0.69 ± 0.00 or 2.302585</p>'
        '<table><tr><td>None</td></tr></table><p>as Flügel et al. [Flügel et al., 2025] do</p>'
        '<table><thead><tr>' + '<th>c</th>' * 8 + '</tr></thead></table><p>The quotient /R_b$ can differ</p>',
        "html.parser")
    found = " ".join(problems("verdict", bad))
    for what in ("raw value", "stderr", "NaN in an output", "NaN glued", "glue", "warning", "code on show",
                 "did not render", "glued sentence in bold", "spread shown as zero", "cell reading None",
                 "more than 4 significant figures in prose: 2.302585", "no findings before the first code cell",
                 "no settings table", "an author named twice", "a table of 8 columns on show", "a stray $ in prose"):
        assert what in found, what
    good = BeautifulSoup('<article><p>What we found: it holds, 0.69 ± 0.02, 2.303, as Flügel et al. [2025] do.</p>'
                         '<div class="cell tag_hide-input"></div>'
                         '<table><tr><td>torch</td><td>2.11.0</td></tr></table>'
                         '<details><table><thead><tr>' + '<th>c</th>' * 8 + '</tr></thead></table></details></article>',
                         "html.parser")
    assert problems("verdict", good) == []      # the control: the same page done right


def test_a_table_with_pipes_in_its_names_renders_as_a_table():
    """show() escapes | so that a column named 'max |z|' or a cell 'a|b' stays one cell; the
    control (the same table unescaped) falls apart, as it did on two pages."""
    import pandas as pd
    from markdown_it import MarkdownIt
    from fglib.book.tables import show
    df = pd.DataFrame({"max |z|": [1.5, 2.0], "case": ["a|b", "c"]})
    parse = lambda text: BeautifulSoup(MarkdownIt("commonmark").enable("table").render(text), "html.parser")
    page = parse(show(df).data)
    assert [th.get_text() for th in page.select("th")] == ["max |z|", "case"]
    assert [td.get_text() for td in page.select("td")] == ["1.50", "a|b", "2.00", "c"]
    control = parse(df.to_markdown(index=False))
    assert [th.get_text().strip() for th in control.select("th")] != ["max |z|", "case"]


def test_a_tables_learning_rates_read_as_the_paper_writes_them():
    """A column of learning rates shows 3e-4, not 0.000300; a column of other numbers (the
    control) keeps its significant figures."""
    import pandas as pd
    from fglib.book.tables import show
    text = show(pd.DataFrame({"method": ["fg", "bp"], "best rate": [3e-4, 0.1], "loss": [3e-4, 0.1]})).data
    rows = [line.split("|")[2:4] for line in text.splitlines()[2:]]
    assert [[cell.strip() for cell in row] for row in rows] == [["3e-4", "0.000300"], ["0.1", "0.100"]]


@pytest.mark.parametrize("low, high, expect", [(0.55, 2.3, {0.7, 1, 1.5, 2}),
                                                (0.05, 2.5, {0.1, 0.2, 0.5, 1, 2}),
                                                (1, 5000, {1, 10, 100, 1000}),
                                                (1e-8, 1e78, {1e-8, 1})])
def test_log_ticks_are_plain_and_never_vanish(low, high, expect):
    """At least three ticks within a decade (a validation loss from 0.55 to 2.3 once had only 1
    and 2), 1-2-5 over a few decades, powers of ten over more (labels that would collide), and
    labels still there over 86 decades (a diverged run once left a panel with none)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fglib.book.style import plain, plain_log_ticks
    fig, ax = plt.subplots()
    ax.plot([0, 1], [low, high])
    ax.set_yscale("log")
    plain_log_ticks(ax, "y")
    ticks = {float(f"{t:.9g}") for t in ax.get_yticks() if low <= t <= high}
    labels = [plain(t) for t in ticks]
    plt.close(fig)
    assert len(ticks) >= 3 and all(len(label) <= 12 for label in labels), labels
    assert (high / low > 1e3) == all(round(math.log10(t), 9).is_integer() for t in ticks)
    if high / low < 1e20:
        assert expect <= ticks


def test_a_tables_numbers_keep_one_form_down_a_column():
    """A column running from 966,000 to 1.03 million reads with separators throughout, not
    '966,000' above '1.03e+06'; exponents come only outside 1e-4 to 1e9, without padding
    (1.19e-7, not 1.19e-07); a best step size h reads as a rate does (1e-5, not 1.00e-05)."""
    import pandas as pd
    from fglib.book.tables import show
    text = show(pd.DataFrame({"best h": [1e-3, 1e-5], "count": [966_000.0, 1_030_000.0],
                              "error": [1.19e-7, 2.5e12]})).data
    rows = [[cell.strip() for cell in line.split("|")[1:4]] for line in text.splitlines()[2:]]
    assert rows == [["0.001", "966,000", "1.19e-7"], ["1e-5", "1,030,000", "2.50e12"]]
    assert "e-0" not in text and "e+" not in text


def test_an_unbounded_interval_reads_from_its_lower_end_up_never_to_inf():
    """T_f/T_b's 95% interval is unbounded above when, in some bootstrap resamples, forward
    gradients never reached the loss: 'from 2.21 up', not '2.21 to inf'; a bounded one (the
    control) keeps both ends. Three figures, as the prose quotes them."""
    import pandas as pd
    from fglib.book.tables import paper_beside_raw
    ours = lambda high: paper_beside_raw("mlp, lr 2e-05", {"T_ratio": 2.34, "low": 2.21, "high": high}, None, None,
                                         pd.DataFrame()).set_index("measure").loc["T_f/T_b", "ours"]
    assert ours(float("inf")) == "2.34 (95%: from 2.21 up)"
    assert ours(2.52) == "2.34 (95%: 2.21 to 2.52)"


@pytest.mark.parametrize("category", [FutureWarning, DeprecationWarning])
def test_torchs_jit_deprecation_is_silenced_in_either_category_and_nothing_else_is(category):
    """torch 2.14 warns that torch.jit.script is deprecated as a FutureWarning, torch 2.11 (the GPU
    machine's) as a DeprecationWarning, whenever forward_ad scripts its rules: neither reaches a
    page, in either wording. Control: another deprecation in the same category still shows."""
    import warnings
    import fglib
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fglib.quiet.silence_known_noise()
        for message in ("`torch.jit.script` is deprecated. Please switch to `torch.compile`",
                        "`torch.jit.script_method` is deprecated.", "`torch.foo` is deprecated."):
            warnings.warn(message, category)
    assert [str(w.message) for w in caught] == ["`torch.foo` is deprecated."]


def test_a_loss_panel_without_evaluations_says_so_without_a_warning():
    """A smoke run shorter than its training-loss interval has no train rows: the panel says 'no
    train evaluations' and seaborn is not asked to draw nothing (it warned on the CNN's page).
    Control: the validation rows of the same runs draw a line per method."""
    import warnings
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from fglib.book.plots import loss_plot
    curves = pd.DataFrame([{"method": m, "run": 0, "split": "validation", "iteration": i, "time": i / 10,
                            "loss": 2.3 - i / 100} for m in ("forward gradient", "backprop") for i in (0, 10, 20)])
    fig, (a, b) = plt.subplots(1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_plot(curves, split="train", ax=a)
        loss_plot(curves, split="validation", ax=b)
    texts, lines = [t.get_text() for t in a.texts], len(b.get_lines())
    plt.close(fig)
    assert texts == ["no train evaluations"] and not a.get_lines() and lines >= 2


def test_a_column_of_counts_reads_as_whole_numbers_and_a_fraction_keeps_its_digits():
    """'runs' of 3 reads 3, not 3.00; a column of that name holding a fraction is left as a number
    (control), and so is any other column."""
    import pandas as pd
    from fglib.book.tables import show
    rows = show(pd.DataFrame({"method": ["a", "b"], "runs": [3.0, 2.0], "error": [3.0, 2.0]})).data.splitlines()[2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [c[1] for c in cells] == ["3", "2"] and [c[2] for c in cells] == ["3.00", "2.00"]
    assert "2.50" in show(pd.DataFrame({"runs": [2.5, 3.0]})).data


def test_a_run_length_table_shows_the_lengths_its_words_turn_on():
    """The rows spread over the lengths, plus where the claim starts to hold for good and the length
    before it, and where forward gradients first reach backprop's loss for good: the lengths a page
    quotes. Control: a table whose claim never holds and whose ratios are all finite adds none."""
    import math
    import pandas as pd
    from fglib.book.tables import run_length_display
    lengths = list(range(1000, 11000, 1000))
    inf = math.inf
    table = pd.DataFrame({"length": lengths,
                          "I_f/I_b": [inf, inf, inf, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5],
                          "I low": [0.5] * 10, "I high": [inf] * 10,
                          "T_f/T_b": [inf, inf, inf, 1.4, 1.2, 1.1, 0.9, 0.7, 0.6, 0.5],
                          "T low": [0.5] * 10, "T high": [inf] * 6 + [0.95, 0.9, 0.8, 0.7]})
    shown = run_length_display(table, rows=2)["run length"].tolist()
    assert shown == ["1,000", "3,000", "4,000", "6,000", "7,000", "10,000"]
    never = table.assign(**{"I_f/I_b": [0.9] * 10, "T high": [inf] * 10})
    assert run_length_display(never, rows=2)["run length"].tolist() == ["1,000", "10,000"]


def test_glued_exponents_are_written_as_the_tables_write_them():
    """book/_ext/exponents.py: Python's padded exponents become the tables' (report.exponent_text);
    other text, and exponents already unpadded (the control), are left as they are."""
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        from exponents import unpadded
    finally:
        sys.path.pop(0)
    from fglib.book.report import exponent_text
    for x in (9.66e-5, 2.5e12, 1.7e-18, 3.0):
        assert unpadded(f"{x:.2e}") == exponent_text(x)
    for text in ("2e-4", "1.7e-18", "between 10 and 12", "1e5"):
        assert unpadded(text) == text and not PADDED_EXPONENT.search(text)
    assert PADDED_EXPONENT.search("9.7e-05") and PADDED_EXPONENT.search("2.5e+12")
