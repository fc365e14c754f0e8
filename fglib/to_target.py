"""Time to a target loss, decomposed: T = I x S.

    I   iterations a run needs to reach the target validation loss (its first evaluation at or
        below the target), one number per run
    S   the median time of one training step, measured interleaved (fglib.timing)
    T_f / T_b = (I_f / I_b) x (S_f / S_b)

I is a property of the optimisation: for the same seeds it is the same on any device. S is a
property of the device and the implementation. A CPU run therefore answers the optimisation
half of the paper's claim for every device, and a step-time measurement on a GPU completes
it. The wall-clock T_f / T_b, which mixes both with the machine's noise, is kept beside the
product as a cross-check.

Evaluations follow a log-spaced schedule (dense early), so that a run that reaches the target
early is not rounded up to a coarse evaluation grid.

Whether a comparison can be graded, and its grade, are the book's (fglib.book.grading); this
module only measures.

The target of each pair of runs (same seed, same data order) is that backprop run's own best
validation loss plus 1%, so that every backprop run reaches its target and the ratio I_f / I_b
is taken pair by pair. (Against the best of the *mean* curve, a run whose own curve stays
just above the mean's minimum would count as never reaching the target.)
"""
import math

import numpy as np

from . import checks


def eval_schedule(iterations, points=60, late_spacing=0.02):
    """About `points` iterations from 1 to `iterations`, log-spaced (dense early), plus 0
    (the initial model) and the last iteration; and over the run's second half at most
    `late_spacing` of the run apart (None: log-spaced only), so that the grid does not decide
    when a run reached a target late in the run (log spacing alone leaves ~18% gaps there)."""
    iterations, points = checks.count("iterations", iterations), checks.count("points", points)
    grid = set(np.unique(np.round(np.logspace(0, math.log10(iterations), points)).astype(int)).tolist())
    if late_spacing is not None:
        step = max(1, math.floor(checks.real("late_spacing", late_spacing, positive=True) * iterations))
        grid |= set(range(iterations, iterations // 2 - 1, -step))
    return sorted({0, *grid, iterations})


def _validation(curves):
    missing = {"method", "run", "iteration", "loss", "split"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves must have columns method, run, split, iteration and loss; it lacks {sorted(missing)}")
    return curves[curves["split"] == "validation"]


def iterations_to_target(curves, target):
    """{(method, run): first evaluated iteration with validation loss <= target, or NaN}."""
    checks.real("target", target)
    out = {}
    for (method, run), rows in _validation(curves).groupby(["method", "run"]):
        hit = rows[rows["loss"] <= target].sort_values("iteration")
        out[(method, run)] = float(hit["iteration"].iloc[0]) if len(hit) else math.nan
    return out


def relative_fall(curve, fraction=0.2):
    """How much a validation curve (iteration, loss) fell over its last `fraction`, relative to
    its final value: (loss at the start of that stretch - final loss) / final loss."""
    curve = curve.sort_values("iteration")
    start = curve["iteration"].max() * (1 - fraction)
    before = curve[curve["iteration"] <= start]
    first = before["loss"].iloc[-1] if len(before) else curve["loss"].iloc[0]
    final = curve["loss"].iloc[-1]
    return float((first - final) / abs(final))


def levelled_off(curves, method="backprop", fraction=0.2, threshold=0.01):
    """(verdict, fall): whether `method`'s mean validation loss fell by less than `threshold`
    (relative) over the last `fraction` of the run."""
    rows = _validation(curves)
    mean = rows[rows["method"] == method].groupby("iteration")["loss"].mean().reset_index()
    if mean.empty:
        raise ValueError(f"no validation rows for method {method!r}")
    fall = relative_fall(mean, fraction)
    return fall < threshold, fall


# Student's t distribution, 97.5% quantile, for 1 to 30 degrees of freedom (standard tables).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]


def t975(dof):
    """The 97.5% quantile of Student's t; beyond 30 degrees of freedom, 30's (slightly wide)."""
    return T975[min(dof, 30) - 1]




def budget_spent(iterations, decay):
    """The fraction of a decaying schedule's whole step budget spent by `iterations`.

    With eta_i = eta_0 e^{-i k}, the steps sum to sum_i eta_i = eta_0 / (1 - e^{-k}) over an
    endless run, and the first N of them to that times 1 - e^{-N k}. With k = 0 (no decay)
    nothing bounds the budget and the fraction is 0."""
    iterations, decay = checks.count("iterations", iterations), checks.real("decay", decay, minimum=0)
    return -math.expm1(-iterations * decay)


def step_sum(lr0, iterations, decay):
    """sum_{i<N} eta_i = eta_0 (1 - e^{-N k}) / (1 - e^{-k}): how far, in learning-rate units, the
    first N steps of the decaying schedule move the weights along their gradients."""
    lr0, decay = checks.rate("lr0", lr0), checks.real("decay", decay, minimum=0)
    if decay == 0:
        return lr0 * checks.count("iterations", iterations)
    return lr0 * budget_spent(iterations, decay) / -math.expm1(-decay)


def mean_ci(values):
    """(mean, half-width of the 95% t confidence interval, n) over the finite values."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    if len(v) == 1:
        return float(v[0]), math.nan, 1
    half = t975(len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half), len(v)


def decompose(curves, step_fg, step_bp, target=None, tolerance=0.01, fg="forward gradient", bp="backprop"):
    """T_f / T_b = (I_f / I_b) x (S_f / S_b). step_fg, step_bp: median seconds per step
    (interleaved).

    Runs are paired by seed. Without a `target`, pair r's target is backprop run r's own best
    validation loss times (1 + tolerance): every backprop run reaches its target by
    construction (its I_b is when it came within `tolerance` of its best), and the question is
    whether, and when, the forward-gradient run with the same seed gets there too. A fixed
    `target` applies to every pair. A pair is left out when backprop never reaches its target,
    or when either run starts at or below it (the target then asks for no learning).

    Returns the targets, I per run for each method, the paired ratios I_f / I_b with their mean
    and 95% CI, how many pairs reached, S_f / S_b, their product, and the wall-clock T_f / T_b
    per pair.
    """
    rows = _validation(curves)
    step_fg, step_bp = checks.real("step_fg", step_fg, positive=True), checks.real("step_bp", step_bp, positive=True)
    tolerance = checks.real("tolerance", tolerance, minimum=0)
    for argument, name in (("fg", fg), ("bp", bp)):   # a name not in the table would read as "never reached"
        if name not in set(rows["method"]):
            raise ValueError(f"{argument}={name!r} is not a method in the curves' validation rows; they hold "
                             f"{sorted(rows['method'].unique())}: pass {argument}= one of those")
    runs = sorted(rows["run"].unique())
    if target is None:
        best = rows[rows["method"] == bp].groupby("run")["loss"].min()
        targets = [float(best[r]) * (1 + tolerance) if r in best.index else math.nan for r in runs]
    else:
        targets = [checks.real("target", target)] * len(runs)
    i_f = [_first_at_or_below(rows, fg, r, t) for r, t in zip(runs, targets)]
    i_b = [_first_at_or_below(rows, bp, r, t) for r, t in zip(runs, targets)]
    # a pair counts when backprop reaches the target and neither run starts at or below it
    # (a target the initial model already meets asks for no learning, and gives I = 0)
    paired = [np.isfinite(b) and _initial(rows, fg, r) > t and _initial(rows, bp, r) > t
              for r, t, b in zip(runs, targets, i_b)]
    ratios = [f / max(b, 1) if np.isfinite(f) and ok else math.nan for f, b, ok in zip(i_f, i_b, paired)]
    mean, half, n = mean_ci(ratios)
    s_ratio = step_fg / step_bp
    wall = [_wall_time(rows, fg, r, f) / _wall_time(rows, bp, r, b) if np.isfinite(f) and ok else math.nan
            for r, f, b, ok in zip(runs, i_f, i_b, paired)]
    return {"target": float(np.nanmean(targets)) if np.isfinite(targets).any() else math.nan, "targets": targets,
            "I_f": i_f, "I_b": i_b, "I_ratio": ratios, "I_ratio_mean": mean, "I_ratio_ci": half,
            "runs_reached": n, "runs": int(sum(paired)), "S_f": step_fg, "S_b": step_bp,
            "S_ratio": s_ratio, "T_ratio": mean * s_ratio if n else math.nan, "T_wall_ratio": wall}


def _initial(rows, method, run):
    """The validation loss of (method, run) at its first evaluation (the initial model)."""
    mine = rows[(rows["method"] == method) & (rows["run"] == run)].sort_values("iteration")
    return float(mine["loss"].iloc[0]) if len(mine) else math.nan


def _first_at_or_below(rows, method, run, target):
    """First evaluated iteration of (method, run) with validation loss <= target, else NaN."""
    hit = rows[(rows["method"] == method) & (rows["run"] == run) & (rows["loss"] <= target)]
    return float(hit["iteration"].min()) if len(hit) else math.nan


def _wall_time(rows, method, run, iteration):
    hit = rows[(rows["method"] == method) & (rows["run"] == run) & (rows["iteration"] == iteration)]
    if "time" not in hit.columns or hit.empty:
        return math.nan
    t = float(hit["time"].iloc[0])
    return t if t > 0 else math.nan


def first_for_good(flags, lengths):
    """The first of `lengths` (increasing) from which every flag is true to the end: the run length
    from which a result holds however much longer the run; None if it fails at the longest."""
    flags = np.asarray(flags, dtype=bool)
    if not len(flags) or not flags[-1]:
        return None
    return lengths[len(flags) - int(np.argmin(flags[::-1]))] if not flags.all() else lengths[0]


def crossing_bracket(iterations, curve, level):
    """(x_0, x_1): the two evaluations between which a curve (values at increasing `iterations`)
    first comes down to `level`, the last one above it and the first at or below it. The curve was
    not evaluated in between, so its first crossing can lie anywhere in (x_0, x_1]; `crossing`
    reads it off the straight line. (x, x) when the first evaluation is already at or below the
    level, (NaN, NaN) when the curve never gets there."""
    hit = np.flatnonzero(np.asarray(curve) <= level)
    if not len(hit):
        return math.nan, math.nan
    k = hit[0]
    return float(iterations[max(k - 1, 0)]), float(iterations[k])


def crossing(iterations, curve, level):
    """The iteration at which a curve (values at increasing `iterations`) first comes down to
    `level`, NaN if it never does. With y_0 > level >= y_1 at the evaluations x_0 < x_1 around it:
    x_0 + (x_1 - x_0)(y_0 - level)/(y_0 - y_1), the straight line between them (x_1 itself when
    y_1 = level, as at a curve's lowest value)."""
    hit = np.flatnonzero(curve <= level)
    if not len(hit):
        return math.nan
    k = hit[0]
    if k == 0:
        return float(iterations[0])
    x0, x1, y0, y1 = iterations[k - 1], iterations[k], curve[k - 1], curve[k]
    return float(x0 + (x1 - x0) * (y0 - level) / (y0 - y1))
