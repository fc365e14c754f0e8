"""One figure style for the whole book, set once by each chapter with `use()`.

A page of the book is about 720 px wide. Figures are drawn at most 7.5 inches wide at 100 dpi
(750 px), so they are shown close to their own size and 10-point text stays at least 9 points
on screen at 100% zoom. Panels go in grids of at most two columns; legends sit outside the
data; tick labels are plain numbers (no 2.28×10^0 on log axes).
"""
import math

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator

WIDTH = 7.5  # inches, the page's width
RC = {
    "figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": (WIDTH, 3.6),
    "figure.constrained_layout.use": True,
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 10,
    "ytick.labelsize": 10, "legend.fontsize": 10, "figure.titlesize": 11,
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


def legend_outside(ax, title=None):
    """The legend to the right of the axes, off the data."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend():
        ax.get_legend().remove()
    if handles:
        ax.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def grid(n, columns=2, height=3.0):
    """A figure with n panels in rows of at most `columns`, the page's width."""
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, min(n, columns), figsize=(WIDTH, height * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])
