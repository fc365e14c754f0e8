"""Plots of the tidy tables: mean over runs as a line, min-max over runs shaded."""
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.ticker import FuncFormatter

from .style import TEXT_POINTS, WIDTH, plain

PALETTE = {"forward gradient": "tab:blue", "backprop": "tab:orange"}   # the paper's two methods
LINE_WIDTHS = {"forward gradient": 1.2, "backprop": 3.2}   # backprop broad beneath, where the two coincide
COLORS = {**PALETTE, "forward gradient, in place": "tab:green", "finite difference, in place": "tab:purple",
          "backprop, checkpointed": "tab:grey", "forward gradient, regenerated": "tab:cyan",
          "backprop, in place": "tab:brown"}   # every method a figure may show
SPREAD = ("pi", 100)  # shade the full range over runs


def pale_broad_lines(ax, width=LINE_WIDTHS["backprop"], alpha=0.6):
    """Make every line of `width` on `ax` pale (the legend's sample too): a series drawn broad
    beneath the others, so that a line lying on it still shows."""
    for line in ax.get_lines():
        if line.get_linewidth() == width:
            line.set_alpha(alpha)


def _prepare(curves, split, smooth):
    """The rows of one split, runs that diverged left out (their huge last losses would swamp
    the mean and the band; the chapter counts them), with the mean time per iteration."""
    rows = curves[curves["split"] == split].copy()
    if "diverged" in rows:
        rows = rows[~rows["diverged"].astype(bool)]
    # On the time axis all runs share the mean elapsed time at each iteration.
    rows["mean time (s)"] = rows.groupby(["method", "iteration"])["time"].transform("mean")
    if smooth > 1:
        rows["loss"] = (rows.sort_values("iteration").groupby(["method", "run"])["loss"]
                        .transform(lambda s: s.rolling(smooth, min_periods=1).mean()))
    return rows


def loss_plot(curves, x="iteration", split="train", ax=None, smooth=1, log=True, title=None):
    """Loss against iteration or time (x='time'), one line per method, runs shaded; runs that
    diverged are left out, and the panel says how many."""
    from .style import plain_log_ticks
    ax = ax or plt.gca()
    rows = _prepare(curves, split, smooth)
    left_out = _diverged_runs(curves)
    if left_out:
        ax.text(0.98, 0.98, f"{left_out} diverged run{'s' * (left_out > 1)} left out", transform=ax.transAxes,
                ha="right", va="top", fontsize=TEXT_POINTS, color="dimgrey")
    xcol = "mean time (s)" if x == "time" else "iteration"
    if rows.empty:   # e.g. a run shorter than its training-loss interval: say so, draw nothing
        ax.text(0.5, 0.5, f"no {split} evaluations", transform=ax.transAxes, ha="center", va="center", color="grey")
        log = False
    else:
        # backprop drawn broad and pale under forward gradients' line, so that where the two
        # curves coincide (the same iterations: the paper's claim 2) both stay in sight
        sns.lineplot(rows, x=xcol, y="loss", hue="method", size="method", sizes=LINE_WIDTHS,
                     hue_order=[m for m in PALETTE if m in set(rows["method"])][::-1],
                     errorbar=SPREAD, palette=PALETTE, ax=ax)
        pale_broad_lines(ax)
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax, "y")
    ax.xaxis.set_major_locator(plt.MaxNLocator(3))   # four labels of 18,000 overlap in a half-width panel
    ax.xaxis.set_major_formatter(FuncFormatter(plain))   # 20,000, not 20000
    ax.set_ylabel(f"{split} loss")
    ax.set_xlabel("iteration" if x == "iteration" else "training time (s)")
    if title:
        ax.set_title(title)
    return ax


def _diverged_runs(curves):
    if "diverged" not in curves:
        return 0
    return int(curves[curves["diverged"].astype(bool)].groupby(["method", "run"]).ngroups)


def comparison_figure(curves, title=None, smooth=50):
    """The paper's four panels in a 2 x 2 grid: training loss (top) and validation loss
    (bottom), against iterations (left) and training time (right); one legend, outside."""
    fig, axes = plt.subplots(2, 2, figsize=(WIDTH, 5.6), layout="constrained")
    loss_plot(curves, "iteration", "train", axes[0, 0], smooth)
    loss_plot(curves, "time", "train", axes[0, 1], smooth)
    loss_plot(curves, "iteration", "validation", axes[1, 0])
    loss_plot(curves, "time", "validation", axes[1, 1])
    for ax in axes.flat:
        if ax.get_legend():
            ax.get_legend().remove()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    overlap = _overlap_colour(axes[1, 0])
    if overlap is not None and any(_bands_overlap(ax) for ax in axes.flat):   # they mix to a third colour: say which
        from matplotlib.patches import Patch
        handles, labels = handles + [Patch(facecolor=overlap)], labels + ["both ranges"]
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    if title:
        fig.suptitle(title)
    return fig


def _bands(ax):
    """The translucent bands drawn on `ax`, in the order drawn."""
    from matplotlib.collections import PolyCollection
    return [c for c in ax.collections if isinstance(c, PolyCollection) and len(c.get_facecolor())]


def _bands_overlap(ax):
    """Whether the first two translucent bands drawn on `ax` share any area (their outlines cross,
    or one holds the other)."""
    bands = _bands(ax)[:2]
    if len(bands) < 2:
        return False
    return any(a.intersects_path(b, filled=True) for a in bands[0].get_paths() for b in bands[1].get_paths())


def _overlap_colour(ax):
    """The colour where the first two translucent bands drawn on `ax` overlap, over white (each
    band's alpha composited in the order drawn); None with fewer than two bands."""
    import numpy as np
    bands = [c.get_facecolor()[0] for c in _bands(ax)]
    if len(bands) < 2:
        return None
    colour = np.ones(3)
    for r, g, b, a in bands[:2]:
        colour = colour * (1 - a) + np.array([r, g, b]) * a
    return tuple(colour)


def contour(tf, ax=None, n=300, levels=30, xlim=None, ylim=None, color=None):
    """Log-spaced contours of a test function over its window (or xlim, ylim), its minimum as a star
    where the window holds it;
    `color` draws them in one colour (e.g. light grey, under coloured arrows) instead of viridis."""
    import numpy as np
    import torch
    ax = ax or plt.gca()
    xlim, ylim = xlim or tf.xlim, ylim or tf.ylim
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    X, Y = np.meshgrid(xs, ys)
    Z = tf.f(torch.from_numpy(np.stack([X, Y], -1))).numpy()
    ax.contour(X, Y, Z, levels=np.logspace(np.log10(max(Z.min(), 1e-2)), np.log10(Z.max()), levels),
               **({"colors": color} if color else {"cmap": "viridis"}), linewidths=0.7, alpha=0.6)
    (mx, my) = tf.minimum
    if xlim[0] <= mx <= xlim[1] and ylim[0] <= my <= ylim[1]:   # a legend lists only what is drawn
        ax.plot(mx, my, marker="*", markersize=14, color="gold", markeredgecolor="black",
                linestyle="none", label="global minimum")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return ax


def trajectories(curves, tf, ax=None):
    """Every run's path (columns x, y of `run_function`'s table) over the contours: backprop's
    as a wide pale band underneath, forward-gradient runs as thin lines on top, so that a
    forward-gradient path that follows backprop's shows inside the band instead of under it.
    Runs that diverged are left out, as the loss panels leave them out, and the panel says so."""
    ax = contour(tf, ax)
    rows = curves[curves["split"] == "train"]
    left_out = _diverged_runs(curves)
    if left_out:
        rows = rows[~rows["diverged"].astype(bool)]
        ax.text(0.02, 0.02, f"{left_out} diverged run{'s' * (left_out > 1)} left out", transform=ax.transAxes,
                ha="left", va="bottom", fontsize=TEXT_POINTS, color="dimgrey")
    for method, width, alpha, z in (("backprop", 5.0, 0.35, 2), ("forward gradient", 1.0, 0.9, 3)):
        runs = rows[rows["method"] == method].groupby("run")
        if method == "backprop":   # deterministic: its runs coincide, and stacked bands would turn opaque
            runs = [next(iter(runs))]
        for run, path in runs:
            ax.plot(path["x"], path["y"], color=PALETTE[method], linewidth=width, alpha=alpha, zorder=z,
                    label=method if run == rows["run"].min() else None)
    ax.legend(loc="upper right")
    return ax


def arrow(ax, start, vector, color, label=None, lw=1.5, ls="-", **kwargs):
    """An arrow from `start` along `vector`; its legend entry has the arrow's colour, width and style."""
    ax.annotate("", xy=(start[0] + vector[0], start[1] + vector[1]), xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=lw, ls=ls, **kwargs))
    if label:  # an invisible line gives the legend an entry
        ax.plot([], [], color=color, lw=lw, ls=ls, label=label, alpha=kwargs.get("alpha"))


def runtime_plot(runtime, paper=None, ax=None, title=None):
    """R_f, R_b and R_f/R_b of each run as points, the paper's values as black bars; the legend
    sits outside the data."""
    from .style import legend_outside
    ax = ax or plt.gca()
    cols = ["R_f", "R_b", "R_f/R_b"]
    long = runtime.melt(id_vars="run", value_vars=cols, var_name="measure", value_name="value")
    sns.stripplot(long, x="measure", y="value", hue="measure", palette=["tab:blue", "tab:orange", "tab:green"],
                  size=7, jitter=0.1, ax=ax, legend=False)
    if paper:
        for i, c in enumerate(cols):
            ax.hlines(paper[c], i - 0.3, i + 0.3, color="black", lw=2, label="paper (Titan XP)" if i == 0 else None)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="ratio 1")
    ax.scatter([], [], color="grey", s=40, label="ours, one dot per run")  # the legend's key for the dots
    ax.set_xticks(range(len(cols)), ["$R_f$", "$R_b$", "$R_f/R_b$"])
    ax.set(ylabel="ratio", xlabel="", title=title or "cost of a step relative to the base runtime")
    legend_outside(ax)
    return ax


def raw_comparison_figure(runs, steps=None, title=None):
    """comparison_figure for raw runs (fglib.book.runs): time is iterations x each method's
    measured step time `steps` ({method: seconds}, the paper's T = I x S), not the clock of a
    run that may have shared its machine; without step times, the runs' own clocks."""
    runs = runs.copy()
    if steps:
        runs["time"] = runs["iteration"] * runs["method"].map(steps)
    return comparison_figure(runs, title, smooth=1)


def schedule_figure(runs, decay, method="backprop"):
    """Validation loss and test accuracy of `method`'s runs against iterations, each with the
    share of the decaying schedule's whole step spent (dotted, right axis): whether a run
    settled, or the schedule ran out."""
    import numpy as np
    from .style import grid
    fig, axes = grid(2, columns=1, height=2.4)   # one above the other: side by side, their ticks collide
    for ax, (column, split) in zip(axes, (("loss", "validation"), ("accuracy", "test"))):
        rows = runs[(runs["split"] == split) & (runs["method"] == method)]
        for i, (_, run) in enumerate(rows.groupby("seed")):
            run = run.sort_values("iteration")
            ax.plot(run["iteration"], run[column], color=PALETTE[method], lw=1.2,
                    label=method if i == 0 else None)
        ax.set(xlabel="iteration", ylabel=f"{split} {column}", title=f"{method} alone: {split} {column}")
        ax.xaxis.set_major_locator(plt.MaxNLocator(3))   # four labels of 18,000 overlap in a half-width panel
        ax.xaxis.set_major_formatter(FuncFormatter(plain))
        its = np.linspace(0, rows["iteration"].max(), 200)
        twin = ax.twinx()
        twin.plot(its, -np.expm1(-decay * its), color="grey", ls=":", lw=1, label="share of the decay's step spent")
        twin.set(ylim=(0, 1.02), ylabel="share of the step spent")
    lines = [line for ax in (axes[0], axes[0].figure.axes[-1]) for line in ax.get_lines() if not line.get_label().startswith("_")]
    fig.legend(lines[:1] + lines[-1:], [line.get_label() for line in lines[:1] + lines[-1:]], loc="outside lower center",
               ncols=1)
    return fig


def paired_figure(runs, split="validation", column="loss", notes=None):
    """One panel per seed, both methods' curves of that seed (the same initial weights and data
    order) against iterations: whether the seeds differ more than the methods do; one legend.
    `notes` ({seed: text}) adds a line under a panel's title."""
    from .style import grid
    seeds = sorted(runs["seed"].unique())
    fig, axes = grid(len(seeds), columns=2, height=2.3)
    rows = runs[runs["split"] == split]
    for ax, seed in zip(axes, seeds):
        for method, run in rows[rows["seed"] == seed].groupby("method"):
            run = run.sort_values("iteration")
            ax.plot(run["iteration"], run[column], color=PALETTE[method], lw=1.4, label=method)
        note = (notes or {}).get(seed)
        ax.set_title(f"seed {seed}" + (f"\n{note}" if note else ""), fontsize=TEXT_POINTS)   # two titles side by side fit
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(plt.MaxNLocator(3))   # four labels of 18,000 overlap in a half-width panel
        ax.xaxis.set_major_formatter(FuncFormatter(plain))
    for ax in axes[1:]:
        ax.sharey(axes[0])
    for ax in axes:   # after sharing, which would copy the first panel's label to every panel
        ax.set_ylabel(f"{split} {column}" if ax.get_subplotspec().is_first_col() else "")
    handles = [plt.Line2D([], [], color=PALETTE[m], lw=1.4) for m in PALETTE if m in set(rows["method"])]
    fig.legend(handles, [m for m in PALETTE if m in set(rows["method"])], loc="outside lower center", ncols=2)
    return fig


def ratio_bars(rows, ax=None, colours=("black", "tab:green")):
    """One measure's ratios (verdict.ratio_comparison's rows: experiment, source, value, note) as
    horizontal bars, one per source within each experiment; where a value is missing, its note
    is written in place of the bar, so that no bar is missing unexplained; where rows give `low`
    and `high`, each bar carries its 95% interval. The dotted line is parity: left of it, forward
    gradients win."""
    import numpy as np
    from matplotlib.transforms import blended_transform_factory
    ax = ax or plt.gca()
    experiments = list(dict.fromkeys(rows["experiment"]))
    sources = list(dict.fromkeys(rows["source"]))
    height = 0.8 / len(sources)
    at_left = blended_transform_factory(ax.transAxes, ax.transData)
    for k, (source, colour) in enumerate(zip(sources, colours)):
        part = rows[rows["source"] == source].set_index("experiment").reindex(experiments)
        y = np.arange(len(experiments)) - 0.4 + height * (k + 0.5)
        shown = np.isfinite(part["value"].to_numpy())
        ax.barh(y[shown], part["value"].to_numpy()[shown], height=height, color=colour, label=source)
        if "low" in part:
            _interval_bars(ax, y, part["value"].to_numpy(), part["low"].to_numpy(), part["high"].to_numpy())
        for y_missing, note in zip(y[~shown], part["note"].to_numpy()[~shown]):
            ax.text(0.01, y_missing, note, transform=at_left, va="center", fontsize=TEXT_POINTS, color=colour,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_yticks(range(len(experiments)), experiments)
    ax.set_ylim(len(experiments) - 0.5, -0.5)
    ax.axvline(1, color="grey", ls=":", lw=1)
    ax.set_xlabel("forward gradient / backprop")
    return ax





def _interval_bars(ax, y, value, low, high):
    """95% intervals on horizontal bars: a line from low to high; where high is infinite (some
    resamples never reached the loss), the line runs to the axes' right edge and ends in an arrow."""
    import numpy as np
    for y_k, v, lo, hi in zip(y, value, low, high):
        if not (np.isfinite(v) and np.isfinite(lo)):
            continue
        if np.isfinite(hi):
            ax.errorbar(v, y_k, xerr=[[v - lo], [hi - v]], fmt="none", ecolor="black", capsize=3, lw=1.4)
        else:
            ax.annotate("", xy=(1.0, y_k), xycoords=("axes fraction", "data"), xytext=(lo, y_k),
                        textcoords="data", arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.4})


def run_length_figure(table, paper_ratio=None, title=None, run_on_step_ratios=None):
    """Claim 4 against the length of the runs (grading.by_run_length's table): T_f/T_b at this
    device's step ratio and at the paper's, each with its 95% interval, against the run length;
    below the dotted line at 1 forward gradients reach backprop's lowest loss sooner. Lengths at
    which forward gradients never reached it are marked at the top, so that no length is missing
    unexplained; where an interval has no upper end the band has a gap; a series with no finite
    point is left out of the figure and its legend.
    `paper_ratio`: the paper's own T_f/T_b, as a dashed line. `run_on_step_ratios`: {label: S_f/S_b}
    to draw, dashed, (I_f/I_b, FG on) x S_f/S_b: the time ratio had forward gradients run on past
    the length (for a model where they never reach the loss within it)."""
    import numpy as np
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4), layout="constrained")
    lengths = table["length"].to_numpy() / 1000
    series = [("T", "this CPU's step ratio", "tab:blue")]
    if "paper T_f/T_b" in table:
        series.append(("paper T", "the paper's step ratio (GPU)", "black"))   # the paper in black, as on the verdict
    for key, label, colour in series:
        mid = table["T_f/T_b" if key == "T" else "paper T_f/T_b"].to_numpy()
        low, high = table[f"{key} low"].to_numpy(), table[f"{key} high"].to_numpy()
        ok = np.isfinite(mid)
        if not ok.any():   # never reached at any length: no line for the legend to promise
            continue
        ax.plot(lengths[ok], mid[ok], color=colour, lw=1.6, label=label)
        band = ok & np.isfinite(high)   # a length whose interval has no upper end leaves a gap, never bridged
        ax.fill_between(lengths, np.where(band, low, np.nan), np.where(band, high, np.nan), color=colour,
                        alpha=0.2, lw=0)
    run_on = []
    for (label, step_ratio), colour, dash in zip((run_on_step_ratios or {}).items(), ("tab:blue", "black"), ("--", "-.")):
        on = table["I_f/I_b, FG on"].to_numpy() * step_ratio
        ok = np.isfinite(on)
        if ok.any():   # dash-dot for the paper's: its own T_f/T_b is the dashed black line
            ax.plot(lengths[ok], on[ok], color=colour, ls=dash, lw=1.4, label=label)
            run_on += list(on[ok])
    never = ~np.isfinite(table["T_f/T_b"].to_numpy())
    if never.any():
        ax.plot(lengths[never], np.ones(never.sum()), "x", color="tab:red", transform=ax.get_xaxis_transform(),
                clip_on=False, label="never reached")
    ax.axhline(1, color="grey", ls=":", lw=1, label="break-even")
    if paper_ratio:
        ax.axhline(paper_ratio, color="black", ls="--", lw=1, label="the paper's $T_f/T_b$")
    ax.set(xlabel="length of the runs (thousand iterations)", ylabel="$T_f/T_b$", title=title)
    finite = [v for c in ("T_f/T_b", "T high", "paper T_f/T_b", "paper T high") if c in table
              for v in table[c].to_numpy() if np.isfinite(v)]
    top = max([1.0, paper_ratio or 0.0] + finite + run_on)
    ax.set_ylim(0, max(ax.get_ylim()[1], 1.3, 1.12 * top))   # room above the data: the crosses at the top never read as 1
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= top + 1e-9])   # no scale above the data: the crosses sit off it
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, fontsize=TEXT_POINTS)
    return fig
