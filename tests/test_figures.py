"""Figures a reader can read on a phone (fglib.book.style): a page there is about 370 px wide,
so a figure wider than that is shrunk; its smallest text must stay at least 8.5 px high, and no
figure may be taller than 1.4 times its width. `style.check` refuses a figure that breaks either
rule (every chapter's figures pass through it when the chapter runs: the smoke tests run them
all); the committed pages' figures are checked here as they were saved."""
import base64
import json
import struct

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from conftest import ROOT  # noqa: E402
from fglib.book import style  # noqa: E402

CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


@pytest.fixture(autouse=True)
def book_style():
    with matplotlib.rc_context():
        style.use()
        yield
    plt.close("all")


def titled(width, height, text_pt=10):
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    ax.plot([1, 2, 3], [3, 1, 2])
    ax.set(title="a panel", xlabel="iteration", ylabel="loss")
    ax.tick_params(labelsize=text_pt)
    return fig


def test_a_figure_of_the_books_width_reads_on_a_phone_and_a_wider_one_does_not():
    px, _, aspect = style.phone_numbers(titled(style.WIDTH, 3.0))
    assert px >= style.MIN_TEXT_PX and aspect < 1
    style.check(titled(style.WIDTH, 3.0))
    with pytest.raises(style.FigureUnreadable, match="px high on a phone"):   # the old 7.5 inches: shrunk too far
        style.check(titled(7.5, 3.6))
    with pytest.raises(style.FigureUnreadable, match="'a panel'"):           # small text, named by its figure
        style.check(titled(style.WIDTH, 3.0, text_pt=7))


def test_a_figure_taller_than_the_limit_is_refused_and_a_long_stack_is_split():
    with pytest.raises(style.FigureUnreadable, match="times as tall as it is wide"):
        style.check(titled(style.WIDTH, 1.5 * style.WIDTH))
    first, axes = style.grid(5, columns=1, height=3.0)
    figures = {ax.figure for ax in axes}
    assert len(axes) == 5 and len(figures) == 3 and first is axes[0].figure
    for fig in figures:
        style.check(fig)
    one, axes = style.grid(2, columns=1, height=3.0)   # the control: a short stack stays one figure
    assert {ax.figure for ax in axes} == {one}


def test_what_the_page_shows_is_measured_a_legend_hung_outside_included():
    """The saved figure is its tight bounding box: without a layout engine to make room, a legend
    hung to the right of the axes widens the figure past WIDTH, and the page shrinks all of it
    (the control: the same legend under the book's layout)."""
    fig, ax = plt.subplots(figsize=(style.WIDTH, 3.0), layout="none")
    ax.plot([1, 2, 3], [1, 2, 3], label="a series with a long name, hung to the right of the data")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    with pytest.raises(style.FigureUnreadable):
        style.check(fig)
    below = titled(style.WIDTH, 3.0)
    below.axes[0].plot([1, 2, 3], [1, 2, 3], label="a series with a long name, hung to the right of the data")
    style.legend_outside(below.axes[0])
    style.check(below)


def test_a_title_wider_than_its_figure_is_broken_into_lines_that_fit_keeping_maths_whole():
    """A long title runs past the figure's edge and widens the saved image (check refuses it,
    naming the title); fit_titles breaks it between words, never inside $...$, and the figure
    then passes. The control: a short title is left as it was."""
    long = "Logistic regression, learning rate 1e-4, 5 runs per method (line: mean, band: range; $S_f / S_b$ dotted)"
    fig = titled(style.WIDTH, 3.0)
    fig.axes[0].set_title(long)
    with pytest.raises(style.FigureUnreadable, match="reaches .* inches past its edge"):
        style.check(fig)
    style.fit_titles(fig)
    lines = fig.axes[0].get_title().split("\n")
    assert len(lines) > 1 and " ".join(lines) == long and "$S_f / S_b$" in lines[-1]
    style.check(fig)
    short = titled(style.WIDTH, 3.0)
    style.fit_titles(short)
    assert short.axes[0].get_title() == "a panel"


def sectioned(height):
    """A short panel with seaborn's sectioned legend (hue and style) and one line added after it."""
    import numpy as np
    import seaborn as sns
    fig, ax = plt.subplots(figsize=(style.WIDTH, height), layout="constrained")
    rows = [dict(h=h, error=h * k, estimator=e, dtype=t) for h in 10.0 ** np.arange(-9, 1)
            for k, e in [(1, "forward difference"), (2, "central difference")] for t in ("float32", "float64")]
    sns.lineplot(pd.DataFrame(rows), x="h", y="error", hue="estimator", style="dtype", marker="o", ax=ax)
    ax.axhline(1e-3, color="k", ls="--", lw=1, label="forward mode, float32")
    ax.set(xscale="log", yscale="log", xlabel="h")
    return fig, ax


def test_a_legend_wider_than_its_panel_in_two_columns_falls_back_to_one():
    """Long labels in two columns would be wider than the figure (and widen the saved image):
    one column. Control: short labels keep two columns."""
    def legend_columns(label):
        fig, ax = plt.subplots(figsize=(style.WIDTH, 3.0), layout="constrained")
        for k in range(4):
            ax.plot([1, 2], [k, k + 1], label=f"{label} {k}")
        style.legend_outside(ax)
        return ax.get_legend()._ncols
    assert legend_columns("ours, fglib engine, 1 thread, with the subnormal numbers flushed to zero at depth") == 1
    assert legend_columns("fg") == 2


def test_a_legend_below_clears_the_axis_label_and_keeps_each_section_in_one_column():
    """The legend's top lies below the x axis's label on a short panel (the control: the old
    placement, a fixed fraction of the axes' height below them, ran into the label), and each of
    seaborn's sections sits whole in one column."""
    for place in ("book", "fraction"):
        fig, ax = sectioned(2.0)
        if place == "book":
            style.legend_outside(ax)
        else:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        clear = ax.get_legend().get_window_extent(renderer).y1 <= ax.xaxis.label.get_window_extent(renderer).y0 + 0.5
        assert clear == (place == "book")
    fig, ax = sectioned(2.0)
    style.legend_outside(ax)
    fig.canvas.draw()
    texts = ax.get_legend().get_texts()
    x = {t.get_text(): round(t.get_window_extent().x0) for t in texts if t.get_text().strip()}
    assert x["estimator"] == x["forward difference"] == x["central difference"]
    assert x["dtype"] == x["float32"] == x["float64"] == x["forward mode, float32"]
    assert x["estimator"] != x["dtype"]


def png_size(encoded):
    header = base64.b64decode(encoded[:64])
    return struct.unpack(">II", header[16:24])


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_committed_figure_fits_a_phone(path):
    """Each figure a committed chapter shows, as the page shows it (PNGs are saved at twice their
    pixel size for sharp screens): at most MAX_ASPECT times as tall as it is wide, and no wider than
    keeps the book's 10-point text MIN_TEXT_PX high at PHONE_PX (style.check, which every figure
    passed when its chapter ran, measures its smallest text exactly)."""
    widest = 10 / 72 * 100 * style.PHONE_PX / style.MIN_TEXT_PX
    found = []
    for cell in json.loads(path.read_text())["cells"]:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png is None:
                continue
            width, height = png_size(png)
            shown = output.get("metadata", {}).get("image/png", {}).get("width", width)
            if shown > widest:
                found.append(f"a figure {shown} px wide (10-point text needs at most {widest:.0f})")
            if height > style.MAX_ASPECT * width:
                found.append(f"a figure {height / width:.2f} times as tall as it is wide")
    assert not found, f"{path.name}: " + "; ".join(found)


def test_a_table_wider_than_a_phone_shows_its_main_columns_and_folds_the_whole_away():
    """tables.show: at most MAX_COLUMNS columns on show, the whole table under them in a dropdown
    (nothing lost); the control, a narrow table, is shown whole with no dropdown."""
    import pandas as pd
    from fglib.book.tables import MAX_COLUMNS, show
    wide = pd.DataFrame([{f"c{i}": float(i) for i in range(10)}])
    text = show(wide, main=["c0", "c9"]).data
    shown, folded = text.split(":::{dropdown}")
    assert shown.splitlines()[0].count("|") == 3 and "c9" in shown and "c5" not in shown
    assert all(f"c{i}" in folded for i in range(10))
    assert show(wide).data.split(":::{dropdown}")[0].splitlines()[0].count("|") == MAX_COLUMNS + 1
    assert ":::" not in show(wide[["c0", "c1"]]).data
    narrow = show(wide[["c0", "c1", "c2"]], main=["c0", "c2"]).data   # a narrow table's main leaves c1 out: folded too
    assert "c1" not in narrow.split(":::{dropdown}")[0] and "c1" in narrow.split(":::{dropdown}")[1]
    assert ":::" not in show(wide[["c0", "c1"]], main=["c0", "c1"]).data   # the control: main names every column
    with pytest.raises(ValueError, match="main must name"):
        show(wide, main=["c0", "no such column"])


def test_a_table_shown_as_cards_names_each_cell_s_column_and_keeps_the_markdown_table_s_text():
    """tables.show(cards=True): the same cells as the Markdown table, as HTML whose every cell names
    its column (data-label, plain text; and a label of its own, its maths typeset, for the phone's
    card), maths left to MathJax, the footnote
    kept, and folding as before; the control (cards=False) is the Markdown table."""
    import re
    from fglib.book.tables import show
    df = pd.DataFrame({"method": ["backprop", "FG's"], "$T_f/T_b$": [1.23456, float("nan")], "I (iterations)": [1200.0, 30.0]})
    html = show(df, note="never reached", cards=True).data
    assert 'class="table fg-cards"' in html and "|" not in html.split("</table>")[0]
    cells = re.findall(r'<td class="text-(\w+)" data-label="([^"]+)"><span class="fg-card-label">([^<]*): </span>([^<]*)</td>', html)
    assert cells == [("left", "method", "method", "backprop"), ("right", "T_f/T_b", r"\(T_f/T_b\)", "1.23"),
                     ("right", "I (iterations)", "I (iterations)", "1,200"), ("left", "method", "method", "FG’s"),
                     ("right", "T_f/T_b", r"\(T_f/T_b\)", "–"), ("right", "I (iterations)", "I (iterations)", "30")]
    assert r"\(T_f/T_b\)" in html and html.endswith("<p>–: never reached</p>")
    assert type(show(df, cards=True)).__name__ == "HTML"   # an HTML output: no Markdown for a reader of the page's text
    markdown = show(df, note="never reached").data
    assert "fg-cards" not in markdown and "  1.23 |" in markdown and "  1,200 |" in markdown   # the same numbers
    assert type(show(df)).__name__ == "Markdown"
    wide = pd.DataFrame([{f"c{i}": float(i) for i in range(10)}])
    shown, folded = show(wide, main=["c0", "c9"], cards=True).data.split('<details class="sd-sphinx-override sd-dropdown')
    assert shown.count("<th ") == 2 and "c5" not in shown and folded.count("<th ") == 10 and ":::" not in folded
    assert "The whole table (10 columns)</span>" in folded and folded.endswith("</div></details>")
    bound = show(pd.DataFrame({"I": ["> 500"]}), note={">": "a lower bound"}, cards=True).data
    assert bound.endswith("<p>&gt; x: a lower bound</p>")   # not escaped for Markdown: '\\>' would show
    with pytest.raises(TypeError, match="cards must be True or False"):
        show(df, cards="yes")


def test_a_spread_column_is_shown_to_the_decimals_of_its_mean():
    """tables.show: a '± sd' column after a mean takes the mean's decimals as shown (2.27 ± 0.20,
    35.6 ± 2.2), or its first significant digit where those would round it to zero; the control,
    a '± sd' column after a text column, keeps the table's significant figures."""
    from fglib.book.tables import show
    t = pd.DataFrame({"method": ["a", "b", "c"], "test error (%)": [2.2733, 35.6, 12.0], "± sd": [0.199, 2.17, 0.0042]})
    rows = [r.split("|")[2:4] for r in show(t).data.splitlines()[2:]]
    assert [(m.strip(), s.strip()) for m, s in rows] == [("2.27", "0.20"), ("35.6", "2.2"), ("12.0", "0.004")]
    alone = show(t[["method", "± sd"]]).data
    assert "0.199" in alone and "2.17" in alone


def test_the_run_length_figure_lists_only_the_series_it_draws():
    """Where forward gradients never reached backprop's lowest loss at any length, the figure marks
    each length 'never reached' and its legend promises no T_f/T_b line; control: with finite
    ratios both lines are drawn and listed."""
    from fglib.book.plots import run_length_figure
    inf = float("inf")
    never = pd.DataFrame({"length": [1000, 2000], "T_f/T_b": [inf, inf], "T low": [inf, inf], "T high": [inf, inf],
                          "paper T_f/T_b": [inf, inf], "paper T low": [inf, inf], "paper T high": [inf, inf]})
    labels = lambda fig: [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "never reached" in labels(run_length_figure(never)) and not any("step ratio" in l for l in labels(run_length_figure(never)))
    reached = never.assign(**{c: [0.8, 0.7] for c in never.columns if c != "length"})
    assert sum("step ratio" in l for l in labels(run_length_figure(reached))) == 2
    run_on = never.assign(**{"I_f/I_b, FG on": [1.2, 1.5]})   # never within the length, reached when run on
    fig = run_length_figure(run_on, run_on_step_ratios={"run on, this CPU": 2.0, "run on, the paper": 0.5})
    assert labels(fig)[:2] == ["run on, this CPU", "run on, the paper"]
    assert [list(line.get_ydata()) for line in fig.axes[0].lines[:2]] == [[2.4, 3.0], [0.6, 0.75]]
    assert not any("run on" in l for l in labels(run_length_figure(never.assign(**{"I_f/I_b, FG on": [inf, inf]}),
                                                                   run_on_step_ratios={"run on, this CPU": 2.0})))
    plt.close("all")


def test_where_two_runs_bands_overlap_the_legend_names_the_mixed_colour():
    """The comparison figure's legend has an entry for the colour the two methods' translucent
    bands make where they overlap (composited over white, in the order drawn), read back from the
    drawn bands; the controls: one method alone, or two bands that never meet, get no such entry."""
    import numpy as np
    from matplotlib.colors import to_rgb
    from fglib.book import plots
    rows = [dict(method=m, run=r, iteration=i, time=0.01 * i, split=s, loss=2 / i ** 0.3 * (1 + 0.1 * r))
            for m in ("forward gradient", "backprop") for r in range(3) for i in range(1, 30)
            for s in ("train", "validation")]
    curves = pd.DataFrame(rows)
    fig = plots.comparison_figure(curves, smooth=1)
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[-1] == "both ranges"
    drawn = [c.get_facecolor()[0] for c in fig.axes[2].collections][:2]
    expected = np.ones(3)
    for *rgb, a in drawn:
        expected = expected * (1 - a) + np.array(rgb) * a
    assert np.allclose(to_rgb(legend.legend_handles[-1].get_facecolor()), expected)
    assert not np.allclose(expected, to_rgb(drawn[0][:3]))   # a colour of its own, not either band's
    alone = plots.comparison_figure(curves[curves["method"] == "backprop"], smooth=1)
    assert "both ranges" not in [t.get_text() for t in alone.legends[0].get_texts()]
    apart = curves.assign(loss=curves["loss"] * np.where(curves["method"] == "backprop", 10, 1))   # bands far apart
    assert "both ranges" not in [t.get_text() for t in plots.comparison_figure(apart, smooth=1).legends[0].get_texts()]


def test_the_run_length_band_leaves_a_gap_where_an_interval_has_no_upper_end():
    """A length whose 95% interval is unbounded (some resamples never reach the loss) breaks the
    band in two rather than being bridged by its neighbours; the control: every interval bounded
    gives one unbroken band."""
    from fglib.book.plots import run_length_figure
    inf = float("inf")
    table = pd.DataFrame({"length": [1000, 2000, 3000, 4000, 5000], "T_f/T_b": [0.9, 0.8, 0.7, 0.6, 0.5],
                          "T low": [0.8, 0.7, 0.6, 0.5, 0.4], "T high": [0.95, 0.9, inf, 0.7, 0.6]})
    def pieces(t):
        band = run_length_figure(t).axes[0].collections[0]
        return len([p for p in band.get_paths() if len(p.vertices)])
    assert pieces(table) == 2
    assert pieces(table.assign(**{"T high": [0.95, 0.9, 0.8, 0.7, 0.6]})) == 1
    plt.close("all")


def figures_without_alt_text(notebook):
    """The code cells of a notebook (parsed JSON) that show a figure with no alt text for a reader
    who cannot see it (myst-nb's cell metadata mystnb.image.alt; without it the page's alt is the
    image's file name)."""
    return [i for i, cell in enumerate(notebook["cells"])
            if any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
            and not cell.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt", "").strip()]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_figure_says_what_it_shows_in_its_alt_text(path):
    """Every figure a committed chapter shows has alt text. Control: the same chapter with one
    figure's alt text removed is caught, naming that cell."""
    notebook = json.loads(path.read_text())
    assert figures_without_alt_text(notebook) == [], f"{path.name}: figure cells without alt text"
    shown = [i for i, c in enumerate(notebook["cells"]) if any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
    if shown:
        del notebook["cells"][shown[0]]["metadata"]["mystnb"]["image"]["alt"]
        assert figures_without_alt_text(notebook) == [shown[0]]


def test_a_contour_plot_lists_the_minimum_only_where_its_window_shows_it():
    """plots.contour draws the star (and its legend entry) only inside the window; control: the
    function's own window holds its minimum and lists it."""
    import fglib
    from fglib.book.plots import contour
    beale = fglib.get_function("beale")
    labels = lambda ax: [l.get_label() for l in ax.get_lines()]
    fig, (whole, close) = plt.subplots(1, 2)
    contour(beale, whole, n=40, levels=5)
    contour(beale, close, n=40, levels=5, xlim=(1.0, 2.0), ylim=(-0.5, 0.3), color="lightgrey")
    assert "global minimum" in labels(whole) and "global minimum" not in labels(close)
    plt.close("all")


def test_the_trajectory_panel_leaves_out_a_diverged_run_and_says_so():
    """plots.trajectories draws no path for a run that diverged (as the loss panels leave it out)
    and says how many it left out; the control: with none diverged, every run is drawn, no note."""
    import fglib
    from fglib.book.plots import trajectories
    rows = [{"method": m, "run": r, "split": "train", "iteration": i, "x": 1.0 + 0.1 * i, "y": 0.1 * r,
             "diverged": m == "forward gradient" and r == 1}
            for m in ("backprop", "forward gradient") for r in (0, 1) for i in range(3)]
    curves = pd.DataFrame(rows)
    paths = lambda ax: [l for l in ax.get_lines() if len(l.get_xdata()) == 3]
    fig, (one, two) = plt.subplots(1, 2)
    trajectories(curves, fglib.get_function("beale"), one)
    trajectories(curves.assign(diverged=False), fglib.get_function("beale"), two)
    assert len(paths(one)) == 2 and "1 diverged run left out" in [t.get_text() for t in one.texts]
    assert len(paths(two)) == 3 and not two.texts
    plt.close("all")


def test_a_legend_below_the_axes_can_ask_for_one_row():
    """legend_outside(ncols=3) lays three short entries in one row (2, 8, 64 read across); the
    default lays them in two columns, and entries too wide for one row fall back to one column."""
    def legend(ncols=None, label="{}"):
        fig = titled(style.WIDTH, 3.0)
        for w in (2, 8, 64):
            fig.axes[0].plot([1, 2], [w, w], label=label.format(w))
        style.legend_outside(fig.axes[0], ncols=ncols)
        return fig.axes[0].get_legend()
    assert legend(ncols=3)._ncols == 3
    assert legend()._ncols == 2   # the control: the default
    assert legend(ncols=3, label="{} workers, " + "a very long label " * 4)._ncols == 1
