"""Plots of the tidy tables: mean over runs as a line, min-max over runs shaded."""
import matplotlib.pyplot as plt
import seaborn as sns

PALETTE = {"forward gradient": "tab:blue", "backprop": "tab:orange"}
SPREAD = ("pi", 100)  # shade the full range over runs


def _prepare(curves, split, smooth):
    rows = curves[curves["split"] == split].copy()
    # On the time axis all runs share the mean elapsed time at each iteration.
    rows["mean time (s)"] = rows.groupby(["method", "iteration"])["time"].transform("mean")
    if smooth > 1:
        rows["loss"] = (rows.sort_values("iteration").groupby(["method", "run"])["loss"]
                        .transform(lambda s: s.rolling(smooth, min_periods=1).mean()))
    return rows


def loss_plot(curves, x="iteration", split="train", ax=None, smooth=1, log=True, title=None):
    """Loss against iteration or time (x='time'), one line per method, runs shaded."""
    ax = ax or plt.gca()
    rows = _prepare(curves, split, smooth)
    xcol = "mean time (s)" if x == "time" else "iteration"
    sns.lineplot(rows, x=xcol, y="loss", hue="method", errorbar=SPREAD, palette=PALETTE,
                 ax=ax, linewidth=1.2)
    if log:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))
    ax.set_ylabel(f"{split} loss")
    ax.set_xlabel("iteration" if x == "iteration" else "training time (s)")
    if title:
        ax.set_title(title)
    return ax


def comparison_figure(curves, title=None, smooth=50):
    """The paper's four panels: train and validation loss, per iteration and per time."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), constrained_layout=True)
    loss_plot(curves, "iteration", "train", axes[0], smooth)
    loss_plot(curves, "time", "train", axes[1], smooth)
    loss_plot(curves, "iteration", "validation", axes[2])
    loss_plot(curves, "time", "validation", axes[3])
    for ax in axes[1:]:
        if ax.get_legend():
            ax.get_legend().remove()
    if title:
        fig.suptitle(title)
    return fig


def contour(tf, ax=None, n=300, levels=30, xlim=None, ylim=None):
    """Log-spaced contours of a test function over its window (or xlim, ylim), its minimum as a star."""
    import numpy as np
    import torch
    ax = ax or plt.gca()
    xlim, ylim = xlim or tf.xlim, ylim or tf.ylim
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    X, Y = np.meshgrid(xs, ys)
    Z = tf.f(torch.from_numpy(np.stack([X, Y], -1))).numpy()
    ax.contour(X, Y, Z, levels=np.logspace(np.log10(max(Z.min(), 1e-2)), np.log10(Z.max()), levels),
               cmap="viridis", linewidths=0.7, alpha=0.6)
    ax.plot(*tf.minimum, marker="*", markersize=14, color="gold", markeredgecolor="black",
            linestyle="none", label="global minimum")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return ax


def trajectories(curves, tf, ax=None):
    """Every run's path (columns x, y of `run_function`'s table) over the contours;
    forward-gradient runs thin, backprop on top."""
    ax = contour(tf, ax)
    rows = curves[curves["split"] == "train"]
    for method, width, alpha, z in (("forward gradient", 0.8, 0.5, 2), ("backprop", 1.8, 1.0, 3)):
        for run, path in rows[rows["method"] == method].groupby("run"):
            ax.plot(path["x"], path["y"], color=PALETTE[method], linewidth=width, alpha=alpha, zorder=z,
                    label=method if run == rows["run"].min() else None)
    ax.legend(loc="upper right", fontsize=8)
    return ax


def arrow(ax, start, vector, color, label=None, **kwargs):
    ax.annotate("", xy=(start[0] + vector[0], start[1] + vector[1]), xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=kwargs.pop("lw", 1.5), **kwargs))
    if label:  # an invisible line gives the legend an entry
        ax.plot([], [], color=color, label=label)


def runtime_plot(runtime, paper=None, ax=None, title=None):
    """R_f, R_b and R_f/R_b of each run as points, the paper's values as black bars."""
    ax = ax or plt.gca()
    cols = ["R_f", "R_b", "R_f/R_b"]
    long = runtime.melt(id_vars="run", value_vars=cols, var_name="measure", value_name="value")
    sns.stripplot(long, x="measure", y="value", hue="measure", palette=["tab:blue", "tab:orange", "tab:green"],
                  size=7, jitter=0.1, ax=ax, legend=False)
    if paper:
        for i, c in enumerate(cols):
            ax.hlines(paper[c], i - 0.3, i + 0.3, color="black", lw=2, label="paper" if i == 0 else None)
        ax.legend()
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(ylabel="ratio", xlabel="", title=title or "cost of a step relative to the base runtime")
    return ax
