"""One figure style for the whole book, set once by each chapter with `use()`.

Many readers open the book on a phone, about 370 px wide, where the page's text column is
PHONE_PX = 338 px (measured in Chromium at a 370 px window) and a wider figure is shrunk to fit.
Figures are drawn at most WIDTH = 5.2 inches wide at 100 dpi (5.4 as saved, with the margin the
inline backend adds), so that the book's TEXT_POINTS = 11-point text stays about 9.6 px high
there, above the MIN_TEXT_PX = 8.5 px the check asks of any text (and shows at its own size on a
desktop). None is taller
than MAX_ASPECT times its width, so that a stack of panels is
split into several figures rather than shrunk. `show()` checks every figure against these
limits before it is shown (`check`). Legends sit below the data; tick labels are plain numbers
(no 2.28×10^0 on log axes).
"""
import math
import textwrap

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator

WIDTH = 5.2        # inches: the widest figure (5.4 as saved, with its margin), readable on a phone
PHONE_PX = 338     # CSS px: the page's text column in a 370 px phone window (measured in Chromium)
MIN_TEXT_PX = 8.5  # the smallest text a reader can read there
MAX_ASPECT = 1.4   # height / width: a taller figure becomes a stack of tiny panels on a phone
TEXT_POINTS = 11   # the book's figure text: about 9.6 px on a phone, where 10 points read as small
RC = {
    "figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": (WIDTH, 3.6),
    "figure.constrained_layout.use": True,
    "font.size": TEXT_POINTS, "axes.titlesize": TEXT_POINTS + 1, "axes.labelsize": TEXT_POINTS,
    "xtick.labelsize": TEXT_POINTS, "ytick.labelsize": TEXT_POINTS, "legend.fontsize": TEXT_POINTS,
    "figure.titlesize": TEXT_POINTS + 1,
    "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3,
}


def use():
    """Apply the book's style (matplotlib rcParams). In a notebook, figures are also saved at
    twice the pixel density ('retina': the PNG has 2x the pixels and is shown at its 1x size), so
    that tick labels stay sharp on high-DPI screens."""
    mpl.rcParams.update(RC)
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        from IPython import get_ipython
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


def plain(x, _pos=None):
    """A tick label as a plain number: 0.001, 0.5, 2, 300, 40,000; outside 1e-4 to 1e6 as a
    power of ten (10^-8, 3×10^9) rather than a long row of digits."""
    if x == 0:
        return "0"
    if not 1e-4 <= abs(x) < 1e6:
        exponent = math.floor(math.log10(abs(x)))
        mantissa = round(x / 10 ** exponent, 6)
        return f"$10^{{{exponent}}}$" if mantissa == 1 else f"${mantissa:g}\\times10^{{{exponent}}}$"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.6g}"


def plain_log_ticks(ax, axis="y"):
    """Log-scale ticks at 1, 2, 5 x 10^k (at 10^k alone over more than three decades, where
    labels such as 2,000 and 5,000 would run into each other; at 1, 1.5, 2, 3, 5, 7 x 10^k
    within one decade, where 1-2-5 could leave a panel with two labels), labelled as plain
    numbers. Call it after the data are drawn: the span decides the ticks."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    decades = math.log10(high / low) if low > 0 else float("inf")
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(plain))
    target.set_minor_formatter(FuncFormatter(lambda *_: ""))


def legend_outside(ax, title=None, ncols=None):
    """The legend below the axes, under their tick labels and axis label, off the data, in two
    columns (or `ncols`, e.g. one row of three): beside the axes it would take a phone's narrow
    figure from the data. A legend in sections (seaborn's, headed by its variables' names) keeps
    each section in one column. Where the columns would be wider than the figure, one column: a
    legend wider than its figure widens the saved image, and the page then shrinks the panel with it."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend():
        ax.get_legend().remove()
    if not handles:
        return
    two = _in_columns(_sections(handles, labels)) if ncols is None else (handles, labels, ncols)
    place = dict(title=title, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=_below_labels(ax),
                 borderaxespad=0.3)
    legend = ax.legend(two[0], two[1], ncols=two[2], **place)
    renderer = ax.get_figure().canvas.get_renderer()
    if two[2] > 1 and legend.get_window_extent(renderer).width > ax.get_figure().bbox.width:
        legend.remove()   # two columns wider than the figure would widen the saved figure and shrink its panel
        ax.legend(handles, labels, ncols=1, **place)


def _is_heading(handle):
    """seaborn heads each section of a legend with an entry that draws nothing."""
    from matplotlib.lines import Line2D
    return (isinstance(handle, Line2D) and handle.get_linewidth() == 0
            and handle.get_marker() in (None, "", "None", " "))


def _sections(handles, labels):
    """The legend's entries as sections: a heading starts a new one."""
    sections = [[]]
    for handle, label in zip(handles, labels):
        if _is_heading(handle) and sections[-1]:
            sections.append([])
        sections[-1].append((handle, label))
    return sections


def _in_columns(sections):
    """(handles, labels, ncols): one section, two columns filled in order; several, packed into
    two columns whole (the first sections in the first column, until it holds about half the
    entries), each column padded with blank entries to the same length, since matplotlib fills
    a legend column by column."""
    from matplotlib.lines import Line2D
    entries = [e for section in sections for e in section]
    if len(sections) == 1 or len(entries) < 3:
        return [h for h, _ in entries], [l for _, l in entries], 2 if len(entries) > 1 else 1
    columns, half = [[], []], len(entries) / 2
    for section in sections:
        column = columns[0] if not columns[1] and len(columns[0]) + len(section) / 2 <= half else columns[1]
        column.extend(section)
    if not columns[1]:
        return [h for h, _ in entries], [l for _, l in entries], 2
    length = max(map(len, columns))
    blank = Line2D([], [], linewidth=0, marker="")
    padded = [e for column in columns for e in column + [(blank, " ")] * (length - len(column))]
    return [h for h, _ in padded], [l for _, l in padded], 2


def _below_labels(ax):
    """A transform placing (0.5, 0) just below the axes' tick labels and axis label: the depth
    of what hangs below the axes, measured on the drawn figure in points (so it holds whatever
    size the layout later gives the axes)."""
    from matplotlib.transforms import offset_copy
    fig = ax.get_figure()
    renderer = fig.canvas.get_renderer()
    box = ax.xaxis.get_tightbbox(renderer)
    depth = 0.0 if box is None else max(0.0, ax.get_window_extent(renderer).y0 - box.y0)
    return offset_copy(ax.transAxes, fig=fig, y=-depth * 72 / fig.dpi, units="points")


def grid(n, columns=2, height=3.0):
    """n panels in rows of at most `columns`, the page's width, each row `height` inches high:
    (the first figure, the n axes). Rows that would make a figure taller than MAX_ASPECT times
    its width go on to a further figure, so that a long stack reads as several figures."""
    rows = -(-n // columns)
    per_figure = max(1, int(MAX_ASPECT * WIDTH // height))
    figures, axes = [], []
    for first_row in range(0, rows, per_figure):
        count = min(per_figure, rows - first_row)
        fig, block = plt.subplots(count, min(n, columns), figsize=(WIDTH, height * count), squeeze=False,
                                  layout="constrained")
        figures.append(fig)
        axes.extend(block.flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return figures[0], axes[:n]


class FigureUnreadable(ValueError):
    """A figure a reader could not read on a phone: text too small there, or too tall."""


def phone_numbers(fig):
    """(the smallest text's height in CSS px on a phone, the text, height / width), measured on
    the figure as the book saves it: its tight bounding box (what the page shows), shrunk to
    PHONE_PX when wider, each visible text's font size in points at the figure's dpi."""
    from matplotlib.text import Text
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())   # inches
    pad = 2 * mpl.rcParams["savefig.pad_inches"]          # the saved image is the tight box padded all round
    width, height = box.width + pad, box.height + pad
    shown = min(1.0, PHONE_PX / (width * 100))             # a page shows a figure at 100 px per inch
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and (t.axes is None or t.axes.get_visible())]   # a hidden axes hides its texts
    if not texts:
        return math.inf, "", height / width
    small = min(texts, key=lambda t: t.get_fontsize())
    return small.get_fontsize() / 72 * 100 * shown, small.get_text(), height / width


def check(fig):
    """Raise FigureUnreadable, naming the figure's title and what is wrong, when its smallest
    text would be under MIN_TEXT_PX high on a phone or it is taller than MAX_ASPECT times its width."""
    px, text, aspect = phone_numbers(fig)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()] or [fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""]
    name = repr(titles[0]) if titles and titles[0] else "a figure"
    if px < MIN_TEXT_PX:
        raise FigureUnreadable(f"{name}: its text {text!r} would be {px:.1f} px high on a phone ({MIN_TEXT_PX} "
                               f"needed): draw the figure at most {WIDTH} inches wide with text of {TEXT_POINTS} points"
                               + _overhang(fig))
    if aspect > MAX_ASPECT:
        raise FigureUnreadable(f"{name} is {aspect:.2f} times as tall as it is wide ({MAX_ASPECT} at most): "
                               "split it into several figures (style.grid does so)")


MATH_SPACE = "\x00"   # a space inside $...$ while a title is wrapped: maths is never broken


def _wrap(text, per_line):
    """The text's lines of at most about per_line characters, broken between words (textwrap),
    never inside a piece of maths ($...$)."""
    pieces = text.split("$")
    kept = "$".join(p.replace(" ", MATH_SPACE) if i % 2 else p for i, p in enumerate(pieces))
    lines = textwrap.wrap(kept, per_line, break_long_words=False, break_on_hyphens=False) or [""]
    return [line.replace(MATH_SPACE, " ") for line in lines]


def fit_titles(fig):
    """Break each title wider than the figure into lines that fit it: a title running past the
    figure's edge widens the saved image, and a phone then shrinks every text in it."""
    fig.canvas.draw()   # the layout places the titles
    renderer = fig.canvas.get_renderer()
    titles = [ax.title for ax in fig.axes if ax.get_visible()] + [t for t in [getattr(fig, "_suptitle", None)] if t]
    for title in titles:
        text = title.get_text()
        box = title.get_window_extent(renderer)
        width, centre = box.width, (box.x0 + box.x1) / 2   # a title is centred over its axes
        columns = (title.axes.get_subplotspec().get_gridspec().ncols
                   if title.axes is not None and title.axes.get_subplotspec() else 1)
        room = 0.95 * min(fig.bbox.width / columns, 2 * (centre - fig.bbox.x0), 2 * (fig.bbox.x1 - centre))
        if not text or width <= room:
            continue
        longest = max(len(line) for line in text.split("\n"))
        per_line = max(10, int(longest * room / width))
        title.set_text("\n".join(wrapped for line in text.split("\n") for wrapped in _wrap(line, per_line)))


def _overhang(fig):
    """What reaches furthest past the figure's edges (a long title, a wide legend), which widens
    the saved image: named in check's message, or nothing when all fits."""
    from matplotlib.legend import Legend
    from matplotlib.text import Text
    renderer = fig.canvas.get_renderer()
    worst, name = 0.5, ""
    for artist in fig.findobj(lambda a: isinstance(a, (Text, Legend)) and a.get_visible()):
        if isinstance(artist, Text) and not artist.get_text().strip():
            continue
        box = artist.get_window_extent(renderer)
        past = max(fig.bbox.x0 - box.x0, box.x1 - fig.bbox.x1)
        if past > worst:
            worst, name = past, artist.get_text() if isinstance(artist, Text) else "the legend"
    return f"; {name!r} reaches {worst / fig.dpi:.2f} inches past its edge" if name else ""


def show():
    """Fit every open figure's titles to its width (fit_titles), check it (check), then show
    them: what the chapters call instead of plt.show()."""
    for number in plt.get_fignums():
        fit_titles(plt.figure(number))
        check(plt.figure(number))
    plt.show()
