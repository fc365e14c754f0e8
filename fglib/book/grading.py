"""Grades derived from raw measurements, never stored: claim 4 (time to a loss) the paper's way.

Everything here is a pure function of the tidy tables that long experiments save
(fglib.book.runs: one row per evaluation of each run; timing rounds: one row per repeat), so a
rule changed here re-grades every saved run without re-running anything.

The paper's T_f / T_b (Section 5, "time to loss"): T_b is when backprop's *mean* validation curve
reaches its lowest value, T_f when forward gradient's mean curve first reaches that same value;
time is iterations x each method's measured step time S. With a tolerance t the level is
lowest x (1 + t). So T_f / T_b = (I_f / I_b) x (S_f / S_b). Its 95% interval comes from a
bootstrap over the paired runs (seeds) and over the timing repeats of each method. A curve is
evaluated at log-spaced iterations early in a run, so the iteration a curve first reaches a level
is interpolated linearly between the two evaluations around it; the first evaluation at or below
it would round I up to the next one (by up to half of it where the spacing grows by 1.47), and
mostly I_f, since backprop's lowest value is itself an evaluation.

A comparison is graded only when it can say something:
- "learned" means accuracy above chance (a z-test of the mean final test accuracy against 1/C
  on the test set's size), not a loss level: a network at 45% test accuracy has learned;
- backprop's mean curve must have levelled off (it fell less than 1% over the run's last fifth),
  or the decay must have frozen it (the rest of the schedule, extrapolated in the schedule's step,
  would lower it by less than 1%); the grade says how much of the schedule's whole step (sum of
  eta_i) had been spent then: a run the decay froze is not a network that converged.
"""
import math
import re

import numpy as np
import pandas as pd

from ..timing import at_threads, quiet, ratio_samples, whole_device  # noqa: F401 (whole_device re-exported)
from ..to_target import budget_spent, crossing_bracket, first_for_good, mean_ci, relative_fall
from ..to_target import crossing as _first_at_or_below
from .tables import significant

FG, BP = "forward gradient", "backprop"

NOT_RUN = "not run yet"
NOT_ON_CPU = "not reproduced on this CPU"
MODEL_WORDS = {"logreg": "logistic regression", "mlp": "MLP", "cnn": "CNN"}


def speed_grade(grade, cpu):
    """A speed claim's grade as the book states it: the paper made its speed claims on a GPU, so
    on a CPU a claim that held nowhere reads 'not reproduced on this CPU' (not a refutation). A
    claim that held on some models or depths and not on others stays 'partly', on any device."""
    return NOT_ON_CPU if cpu and grade not in ("holds", "partly") else grade


UNBIASED_Z = 4.5   # claim 1: how many standard errors a Monte Carlo mean may sit from the truth


def grade_unbiased(max_abs_z, second_moment_se):
    """Claim 1 from the unbiasedness chapter's tests: 'holds' if the largest |z| of the mean of
    forward gradients against the true gradient, and the largest deviation of E||g||^2 from
    (n + 2) ||grad f||^2 in standard errors, are both below UNBIASED_Z."""
    return "holds" if max_abs_z < UNBIASED_Z and second_moment_se < UNBIASED_Z else "does not hold"


def mc_slopes(mc):
    """{case: the log-log slope of the mean relative error of the mean of K forward gradients
    against K} (theory: -1/2), from the unbiasedness chapter's Monte Carlo table."""
    slopes = {}
    for case, d in mc.groupby("case", sort=False):
        m = d.groupby("K")["relative error"].mean()
        slopes[case] = float(np.polyfit(np.log(m.index.to_numpy(float)), np.log(m.to_numpy()), 1)[0])
    return slopes


def unbiased_numbers(mc, z, moments):
    """What the verdict grades claim 1 with, from the unbiasedness chapter's raw tables: mc (case, K,
    repeat, relative error: the error of the mean of K forward gradients), z (case, direction,
    component, z, samples: each component's z-score of the mean against the true gradient) and
    moments (n, direction, E||g||^2 / ||grad f||^2, its standard error, the formula's value, mean
    cosine). Returns the largest |z|, the samples behind it, each case's log-log slope of the mean
    error against K (theory: -1/2), the largest deviation of the second moment from its formula in
    standard errors, and the mean cosine at the largest n (normal directions)."""
    slopes = mc_slopes(mc)
    deviation = (moments["E‖g‖² / ‖∇f‖²"] - moments["formula"]) / moments["standard error"]
    top = moments[moments["n"] == moments["n"].max()].set_index("direction")
    return {"device": z["device"].iloc[0] if "device" in z else "CPU", "max_abs_z": float(z["z"].abs().max()),
            "z_samples": int(z["samples"].max()), "z_count": int(len(z)), "slopes": slopes,
            "max_second_moment_deviation_se": float(deviation.abs().max()),
            "cos_at_max_dim": float(top.loc["normal", "mean cosine"]), "max_dim": int(moments["n"].max())}


def combine_grades(grades):
    """One grade from several experiments' grades. The experiments that were judged decide: if
    they all got one word, that word, provided they are at least half of all the experiments
    (else 'not judged'); if they disagree, 'partly'. 'partly' therefore always means that the
    claim held somewhere and failed somewhere, never that some experiments are still to judge."""
    grades = list(grades)
    if not grades:
        return NOT_RUN
    judged = [g for g in grades if g != NOT_JUDGED]
    if not judged:
        return NOT_JUDGED
    if len(set(judged)) > 1:
        return "partly"
    return judged[0] if len(judged) >= len(grades) / 2 else NOT_JUDGED


def grade_ratios(ratios, threshold=1.0):
    """'holds' if every value is below the threshold, 'partly' if some are, else 'does not hold'.
    NaN (e.g. a target never reached) counts as not below."""
    below = [v < threshold for v in pd.Series(ratios, dtype=float)]  # NaN < x is False
    return _grade(below) if below else "does not hold"


NOT_JUDGED = "not judged"


def _grade(flags):
    """'holds' if all flags are true, 'partly' if some are, 'does not hold' if none."""
    flags = list(flags)
    if not flags:
        return NOT_RUN
    return "holds" if all(flags) else ("partly" if any(flags) else "does not hold")


TOLERANCES = (0.0, 0.005, 0.01, 0.02)
CHANCE_Z = 3.0          # how many standard errors above chance an accuracy must be to count as learned
LEVELLED = 0.01         # backprop's mean curve fell less than this over the last fifth
FROZEN = 0.9            # the decay had spent at least this share of its whole step


def mean_curve(runs, method, split="validation", column="loss"):
    """The mean over runs of `method`'s curve, at the iterations every one of its runs evaluated."""
    rows = runs[(runs["method"] == method) & (runs["split"] == split)]
    wide = rows.pivot_table(index="iteration", columns="seed", values=column)
    return wide.dropna().mean(axis=1)


def first_at_or_below(curve, level):
    """The iteration at which `curve` (a Series by iteration) first comes down to `level`,
    interpolated between the evaluations around it (_first_at_or_below), else NaN."""
    return _first_at_or_below(curve.index.to_numpy(dtype=float), curve.to_numpy(), level)


def time_ratio(runs, step_fg, step_bp, tolerance=0.0, fg=FG, bp=BP):
    """The paper's T_f / T_b, with its factors: I_b, I_f (iterations), the level reached, S_f / S_b."""
    bp_curve, fg_curve = mean_curve(runs, bp), mean_curve(runs, fg)
    level, i_b, i_f, i_ratio = _iteration_ratio(bp_curve.index.to_numpy(dtype=float), bp_curve.to_numpy(),
                                                fg_curve.index.to_numpy(dtype=float), fg_curve.to_numpy(), tolerance)
    s_ratio = step_fg / step_bp
    return {"level": level, "I_b": i_b, "I_f": i_f, "I_ratio": i_ratio, "S_ratio": s_ratio,
            "T_ratio": i_ratio * s_ratio}


def grid_bracket(runs, s_ratio, fg=FG, bp=BP):
    """How far the evaluation grid alone can move the paper's T_f / T_b: forward gradient's mean
    curve first reaches backprop's lowest mean loss somewhere between two evaluations
    (to_target.crossing_bracket), and T_f / T_b is read at the straight line between them. With the
    crossing at either end instead: I_f low and high, and T_f / T_b low and high at the step ratio
    `s_ratio` (NaN where forward gradient never reaches the level). Backprop's own I_b is an
    evaluation (its lowest), so it carries no such uncertainty."""
    read = time_ratio(runs, 1.0, 1.0, fg=fg, bp=bp)   # backprop's lowest level and I_b, as the paper's rule reads them
    fg_curve = mean_curve(runs, fg)
    low, high = crossing_bracket(fg_curve.index.to_numpy(dtype=float), fg_curve.to_numpy(), read["level"])
    i_b = read["I_b"]
    return {"I_b": i_b, "I_f low": low, "I_f high": high,
            "T low": low / max(i_b, 1) * s_ratio, "T high": high / max(i_b, 1) * s_ratio}


def _iteration_ratio(it_b, bp_curve, it_f, fg_curve, tolerance):
    """(level, I_b, I_f, I_f / I_b) from the two mean curves: the level is backprop's lowest times
    (1 + tolerance), I the first iteration at or below it (I_f / I_b infinite if never)."""
    level = float(bp_curve.min()) * (1 + tolerance)
    i_b, i_f = _first_at_or_below(it_b, bp_curve, level), _first_at_or_below(it_f, fg_curve, level)
    return level, i_b, i_f, i_f / max(i_b, 1) if math.isfinite(i_f) else math.inf


def _wide(runs, method, split="validation", column="loss"):
    """(iterations, seeds, array iterations x seeds) of `method`'s curves, at the iterations every run evaluated."""
    rows = runs[(runs["method"] == method) & (runs["split"] == split)]
    wide = rows.pivot_table(index="iteration", columns="seed", values=column).dropna()
    return wide.index.to_numpy(dtype=float), list(wide.columns), wide.to_numpy()


def bootstrap_time_ratio(runs, timings, tolerance=0.0, samples=2000, seed=0, fg=FG, bp=BP, step_ratio=None):
    """(2.5%, 97.5%) of T_f / T_b over bootstrap resamples of the paired seeds and of the timing:
    the processes (so that the interval carries the spread between sittings, not only within one)
    and each picked process's rounds (S_f / S_b as step_times gives it, from the resampled rounds);
    and the share of resamples in which forward gradient reached the level at all. Each resample is
    time_ratio on the resampled runs (mean curves over the picked seeds, with repeats). A fixed
    `step_ratio` (e.g. 1 for I_f / I_b alone, or the paper's S_f / S_b) replaces the timing's."""
    rng, timing_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])   # the same seed picks
    (it_b, seeds_b, wide_b), (it_f, seeds_f, wide_f) = _wide(runs, bp), _wide(runs, fg)   # with or without S
    seeds = sorted(set(seeds_b) & set(seeds_f))
    col_b, col_f = [seeds_b.index(s) for s in seeds], [seeds_f.index(s) for s in seeds]
    per = _by_process(timings) if step_ratio is None else None
    ratios = np.empty(samples)
    for k in range(samples):
        pick = rng.choice(len(seeds), len(seeds))
        s_ratio = _resampled_step_ratio(timing_rng, per, fg, bp) if step_ratio is None else step_ratio
        bp_curve, fg_curve = wide_b[:, [col_b[i] for i in pick]].mean(1), wide_f[:, [col_f[i] for i in pick]].mean(1)
        ratios[k] = _iteration_ratio(it_b, bp_curve, it_f, fg_curve, tolerance)[3] * s_ratio
    # order statistics, not interpolation: "never reached" is an infinite ratio
    low, high = np.quantile(ratios, [0.025, 0.975], method="inverted_cdf")
    return float(low), float(high), float(np.isfinite(ratios).mean())


def _by_process(timings):
    """{process: {name: seconds of its quiet rounds}}: each process's rounds, the ones another
    process disturbed left out (fglib.timing.quiet) when the rounds record it."""
    if "process" not in timings.columns:
        timings = timings.assign(process=0)
    out = {}
    for process, rounds in timings.groupby("process"):
        calm = quiet(rounds) if "disturbed" in rounds.columns else rounds
        out[process] = {name: g["seconds"].to_numpy() for name, g in calm.groupby("name")}
    return out


def _geomean(values):
    return float(np.exp(np.mean(np.log(values))))


def step_times(timings, fg=FG, bp=BP):
    """Seconds per step of each method (and of the base call, when timed): the median over a
    process's quiet rounds, then the geometric mean over processes. So that one number serves
    everywhere, S_f / S_b = R_f / R_b is exactly the ratio of these (step_ratio_spread's mean)."""
    per = _by_process(timings)
    names = [n for n in (fg, bp, "base") if all(n in p for p in per.values())]
    return {n: _geomean([np.median(p[n]) for p in per.values()]) for n in names}


def step_ratio_spread(timings, fg=FG, bp=BP):
    """S_f / S_b within and between processes. Per process: the ratio of the two medians, and the
    spread of the per-round ratios (the interquartile range / 1.349, the sd of a normal law with
    that IQR: one round that another process interrupted does not swamp it). Over processes: the
    geometric mean of the per-process ratios (equal to step_times' ratio) and their sd."""
    rows = []
    for process, rounds in timings.assign(process=timings.get("process", 0)).groupby("process"):
        per = _by_process(rounds)[process]
        ratios = ratio_samples(quiet(rounds) if "disturbed" in rounds.columns else rounds, fg, bp)
        q1, q3 = ratios.quantile([0.25, 0.75])
        rows.append({"process": process, "S_f/S_b": float(np.median(per[fg]) / np.median(per[bp])),
                     "sd within": float((q3 - q1) / 1.349), "rounds": len(ratios)})
    table = pd.DataFrame(rows)
    return {"per process": table, "mean": _geomean(table["S_f/S_b"]),
            "sd between": float(table["S_f/S_b"].std()) if len(table) > 1 else math.nan,
            "sd within": float(table["sd within"].mean())}


def processes_by_threads(timings, fg=FG, bp=BP):
    """Every timing process, the whole device's first (the book's S_f/S_b is their geometric
    mean, whole_device), then those with fewer threads: its thread count, S_f/S_b (the ratio of
    its median steps), the spread of its per-round ratios (step_ratio_spread's sd within) and its
    undisturbed rounds; numbered 1, 2, ... in that order."""
    if timings is None or timings.empty:
        return pd.DataFrame(columns=["process", "threads", "S_f/S_b", "sd within", "rounds"])
    counts = sorted(timings["threads"].unique(), reverse=True) if "threads" in timings else [None]
    parts = [step_ratio_spread(timings if n is None else at_threads(timings, n), fg, bp)["per process"]
             .assign(threads=n) for n in counts]
    table = pd.concat(parts, ignore_index=True).assign(process=lambda t: range(1, len(t) + 1))
    return table[["process", "threads", "S_f/S_b", "sd within", "rounds"]]


def _resampled_step_ratio(rng, per, fg=FG, bp=BP):
    """One bootstrap draw of S_f / S_b: the processes resampled, then each picked process's rounds
    of each method."""
    processes = list(per.values())
    picked = [processes[i] for i in rng.choice(len(processes), len(processes))]
    return _geomean([np.median(rng.choice(p[fg], len(p[fg]))) / np.median(rng.choice(p[bp], len(p[bp])))
                     for p in picked])


def run_lengths(runs, first=0.05):
    """The lengths a saved experiment can be cut to: every iteration at which all its runs were
    evaluated on the validation set, from `first` of the run's length on."""
    wide = runs[runs["split"] == "validation"].pivot_table(index="iteration", columns=["method", "seed"],
                                                             values="loss").dropna()
    its = wide.index.to_numpy()
    return [int(i) for i in its if i >= first * its.max()]


def by_run_length(runs, timings, lengths=None, paper_step_ratio=None, samples=1000, seed=0, fg=FG, bp=BP,
                  tolerance=0.0):
    """Claim 4 against the length of the runs: a run of L iterations under the same schedule is
    exactly the first L iterations of a longer one (the rate at step i depends on i alone), so
    each length is graded on the saved runs cut at L. One row per length:

        I_b, I_f        iterations to backprop's lowest mean validation loss within the first L
        I_f/I_b         and its 95% bootstrap interval over the paired seeds (I low, I high)
        I_f/I_b, FG on  the same with forward gradients' runs as saved, not cut at L: how many
                        iterations FG needs to match a backprop run of L (inf: not within the saved runs)
        S_f/S_b         this device's step ratio (step_times)
        T_f/T_b         = I_f/I_b x S_f/S_b, its interval over seeds and timing (T low, T high)
        bp lowest at end   whether backprop's lowest mean loss is the last evaluation (T_b = L)
        paper T_f/T_b   = I_f/I_b x the paper's S_f/S_b (R_f/R_b, its GPU), with the I interval scaled

    `tolerance` as in time_ratio: the level is backprop's lowest within the first L times (1 + tolerance).
    """
    if timings is None or timings.empty:
        raise ValueError("timings has no rounds: T = I x S needs the step times (measure them first)")
    s = step_times(timings, fg, bp)
    rows = []
    for length in lengths or run_lengths(runs):
        cut = runs[runs["iteration"] <= length]
        r = time_ratio(cut, s[fg], s[bp], tolerance, fg, bp)
        i_low, i_high, _ = bootstrap_time_ratio(cut, timings, tolerance, samples, seed, fg, bp, step_ratio=1.0)
        t_low, t_high, reached = bootstrap_time_ratio(cut, timings, tolerance, samples, seed, fg, bp)
        longer = runs[(runs["method"] == fg) | (runs["iteration"] <= length)]   # backprop cut, FG as saved
        row = {"length": length, "I_b": r["I_b"], "I_f": r["I_f"], "I_f/I_b": r["I_ratio"], "I low": i_low,
               "I high": i_high, "I_f/I_b, FG on": time_ratio(longer, 1.0, 1.0, tolerance, fg, bp)["I_ratio"], "S_f/S_b": r["S_ratio"], "T_f/T_b": r["T_ratio"], "T low": t_low, "T high": t_high,
               "resamples reaching": reached, "bp lowest at end": bool(r["I_b"] >= length)}
        if paper_step_ratio is not None:
            row.update({"paper T_f/T_b": r["I_ratio"] * paper_step_ratio, "paper T low": i_low * paper_step_ratio,
                        "paper T high": i_high * paper_step_ratio})
        rows.append(row)
    return pd.DataFrame(rows)


def run_length_numbers(table):
    """The numbers a chapter says of claim 4 against run length (by_run_length's table): the
    shortest and longest lengths, I_f/I_b and T_f/T_b at each (with the interval at the longest),
    the length from which the claim holds at this device's step ratio and at the paper's (NaN if it
    does not hold at the longest), the evaluated length just before the first (holds_before: the
    length from which it holds lies between the two), the shortest and longest of any shorter lengths at which it held
    at the paper's (NaN if none), whether the interval at the paper's ratio had no upper end at every
    length between those and the length from which it holds (paper_gap_unbounded), whether backprop's
    lowest mean loss was the last evaluation at every length, and the range of I_f/I_b with forward
    gradients' runs as saved."""
    first, last = table.iloc[0], table.iloc[-1]
    fg_on = table["I_f/I_b, FG on"]
    finite_on = fg_on[np.isfinite(fg_on)]
    cpu, paper = holds_from(table), holds_from(table, "paper T high") if "paper T high" in table else None
    earlier = (table[(table["length"] < paper) & (table["paper T high"] < 1)]["length"] if paper is not None
               else pd.Series(dtype=float))   # shorter lengths at which it held too, though not at all between
    gap = table[(table["length"] > earlier.max()) & (table["length"] < paper)] if len(earlier) else table.iloc[:0]
    return {"first_length": int(first["length"]), "last_length": int(last["length"]),
            "I_first": float(first["I_f/I_b"]), "I_last": float(last["I_f/I_b"]),
            "T_first": float(first["T_f/T_b"]), "T_last": float(last["T_f/T_b"]), "S": float(last["S_f/S_b"]),
            "T_last_low": float(last["T low"]), "T_last_high": float(last["T high"]),
            "holds_from": math.nan if cpu is None else cpu, "holds_from_paper": math.nan if paper is None else paper,
            "holds_before": _length_before(table, cpu),
            "paper_earlier_low": float(earlier.min()) if len(earlier) else math.nan,
            "paper_earlier_high": float(earlier.max()) if len(earlier) else math.nan,
            "paper_gap_unbounded": bool(len(gap)) and not np.isfinite(gap["paper T high"]).any(),
            "bp_lowest_at_end_always": bool(table["bp lowest at end"].all()),
            "I_fg_on_min": float(finite_on.min()) if len(finite_on) else math.nan,
            "I_fg_on_max": float(finite_on.max()) if len(finite_on) else math.nan,
            "I_fg_on_until": int(table.loc[finite_on.index[-1], "length"]) if len(finite_on) else 0}


def page_numbers(report, costs, memory, runs):
    """The numbers a claim-4 chapter's sentences quote, from claim4_report, step_costs (None before
    the steps are timed), the memory rows (weights included) and the runs: the pairs, the verdict,
    I_f/I_b, T_f/T_b and its interval, the decay's spent step, backprop's fall over the run's last
    fifth (what levelled off compares with LEVELLED), the share of bootstrap resamples in
    which forward gradients never reached the level, S_f/S_b, the worst pair's I_f/I_b and forward
    gradient's step memory over backprop's; NaN where a number is not measured yet."""
    nan = math.nan
    pairs = paired_ratios(runs) if not runs.empty else None
    total = memory.set_index("method")["total"] if memory is not None and not memory.empty else None
    return {"pairs": report["pairs"], "verdict": report["verdict"], "I": report.get("I_ratio", nan),
            "T": report.get("T_ratio", nan), "T_low": report.get("low", nan), "T_high": report.get("high", nan),
            "spent": report.get("spent", nan), "bp_fall": report.get("bp_fall", nan),
            "never": 1 - report.get("reached", nan),
            "S": costs["S_ratio"] if costs else nan,
            "worst_pair_I": float(pairs["I_f/I_b"].max()) if pairs is not None and len(pairs) else nan,
            "memory_ratio": float(total[FG] / total[BP]) if total is not None else nan}


def cost_numbers(costs):
    """What a chapter's cost section quotes of step_costs (None before the steps are timed): the
    timing processes, the lowest and highest S_f/S_b among them, R_f and R_b."""
    if not costs:
        return {"processes": 0, "S_lo": math.nan, "S_hi": math.nan, "R_f": math.nan, "R_b": math.nan}
    per = costs["per process"]["S_f/S_b"]
    return {"processes": len(per), "S_lo": per.min(), "S_hi": per.max(), "R_f": costs["R_f"], "R_b": costs["R_b"]}


def run_length_page_numbers(lengths, all_timings, paper_step_ratio):
    """run_length_numbers, with the paper's step ratio, and S_f/S_b at one thread (the long runs'
    own thread count, from all the timing rounds) with T_f/T_b over the full length at it (NaN
    where no one-thread rounds were timed)."""
    one_thread = at_threads(all_timings, 1)
    s1 = step_times(one_thread) if one_thread is not None and not one_thread.empty else None
    s1_ratio = s1[FG] / s1[BP] if s1 else math.nan
    return {**run_length_numbers(lengths), "paper_S": paper_step_ratio, "S_one_thread": s1_ratio,
            "T_last_one_thread": float(lengths["I_f/I_b"].iloc[-1] * s1_ratio)}


def _length_before(table, length):
    """The evaluated run length just below `length` (where a claim that holds from `length` on did
    not yet hold for good): NaN if none or if `length` is None."""
    shorter = table["length"][table["length"] < length] if length is not None else []
    return float(max(shorter)) if len(shorter) else math.nan


def holds_from(table, high="T high"):
    """The shortest run length from which the claim holds at every longer length (the upper end
    of the 95% interval below 1 there and from there on), or None if it does not hold at the
    longest. `high`: 'T high' (this device's step ratio) or 'paper T high' (the paper's)."""
    return _length_for_good(table, lambda t: t[high] < 1)


def reaches_from(table, level, column="paper T_f/T_b"):
    """The shortest run length from which `column` of by_run_length's table (by default T_f/T_b at
    the paper's step ratio, the point estimate) is at or below `level` at every longer length: the
    run length at which the paper's own T_f/T_b would be found; None if it is above at the longest."""
    return _length_for_good(table, lambda t: t[column] <= level)


def _length_for_good(table, holds):
    """to_target.first_for_good over a by_run_length table: the first length from which
    `holds(table)` (a boolean column) is true to the longest, as an int; None if false there."""
    ordered = table.sort_values("length")
    start = first_for_good(holds(ordered).to_numpy(), ordered["length"].tolist())
    return None if start is None else int(start)


def tolerance_table(runs, timings, tolerances=TOLERANCES, samples=1000, fg=FG, bp=BP):
    """How T_f / T_b moves with the tolerance above backprop's lowest mean loss: a row each."""
    s = step_times(timings, fg, bp)
    rows = []
    for t in tolerances:
        r = time_ratio(runs, s[fg], s[bp], t, fg, bp)
        low, high, reached = bootstrap_time_ratio(runs, timings, t, samples, fg=fg, bp=bp)
        rows.append({"tolerance": t, "level": r["level"], "I_b": r["I_b"], "I_f": r["I_f"], "I_f/I_b": r["I_ratio"],
                     "S_f/S_b": r["S_ratio"], "T_f/T_b": r["T_ratio"], "95% low": low, "95% high": high,
                     "resamples reaching": reached})
    return pd.DataFrame(rows)


def learned(runs, method, n_classes=10, n_test=10_000):
    """(whether `method`'s runs learned, their mean final test accuracy, the accuracy that counts
    as above chance): mean accuracy > 1/C + CHANCE_Z standard errors of a chance guesser on n_test."""
    last = runs[(runs["method"] == method) & (runs["split"] == "test")]
    last = last[last["iteration"] == last.groupby("seed")["iteration"].transform("max")]
    accuracy = float(last["accuracy"].mean())
    chance = 1 / n_classes
    bar = chance + CHANCE_Z * math.sqrt(chance * (1 - chance) / n_test)
    return accuracy > bar, accuracy, bar


def levelled(runs, iterations, decay, method=BP, fraction=0.2):
    """(whether `method`'s mean validation curve levelled off, its fall over the last `fraction`,
    the share of the schedule's whole step spent by the end)."""
    fall = relative_fall(mean_curve(runs, method).rename("loss").reset_index(), fraction)
    return fall < LEVELLED, fall, budget_spent(iterations, decay) if decay else 0.0


def _late_share(iterations, decay, fraction):
    """e^{-kN} / (e^{-(1-f)kN} - e^{-kN}): the schedule's step still to come after N iterations,
    over the step taken during the run's last fraction f."""
    left, late = math.exp(-decay * iterations), math.exp(-decay * iterations * (1 - fraction))
    return left / (late - left)


def fall_still_to_come(fall, iterations, decay, fraction=0.2):
    """How much further (relative) the loss would fall over the rest of a decaying schedule,
    extrapolated linearly in the schedule's step: with eta_i = eta_0 e^{-ik} the run's last
    fraction f took the share e^{-(1-f)kN} - e^{-kN} of the whole step and e^{-kN} is still to
    come, so the fall still to come is fall x e^{-kN} / (e^{-(1-f)kN} - e^{-kN}). Without decay
    nothing bounds it (inf)."""
    if not decay or fall <= 0:
        return math.inf if fall > 0 else 0.0
    return fall * _late_share(iterations, decay, fraction)


def iterations_to_freeze(fall, iterations, decay, fraction=0.2, level=LEVELLED):
    """Roughly how many iterations a run of this schedule needs before the rest of the schedule
    can lower the loss by less than `level` (the same linear extrapolation as fall_still_to_come):
    N' = ln(s / level) / k, where s = fall / (e^{-(1-f)kN} - e^{-kN}) is the fall per whole step.
    None without decay."""
    if not decay:
        return None
    per_step = fall * _late_share(iterations, decay, fraction) / math.exp(-decay * iterations)
    return max(iterations, math.ceil(math.log(per_step / level) / decay)) if per_step > level else iterations


LEVELLED_OFF, DECAY_SPENT, FROZEN_BY_DECAY, STILL_FALLING = (
    "levelled off", "levelled off, the decay spent", "frozen by the decay", "still falling")


def settled(runs, iterations, decay):
    """(whether backprop's mean curve can be compared, why, the numbers): it levelled off
    (LEVELLED_OFF; DECAY_SPENT when the decay had spent FROZEN or more of its step by then, so it
    may have been frozen rather than converged), or it still fell but the rest of the schedule would
    lower it by less than LEVELLED (FROZEN_BY_DECAY: compared where the decay froze it), or neither
    (STILL_FALLING: not comparable; `iterations_needed` is the run length that would settle it,
    with a decay). Numbers: the fall over the run's last fifth, the share of the step spent, the
    fall still to come."""
    flat, fall, spent = levelled(runs, iterations, decay)
    to_come = fall_still_to_come(fall, iterations, decay)
    numbers = {"bp_fall": fall, "spent": spent, "fall_to_come": to_come}
    if flat:
        return True, DECAY_SPENT if spent >= FROZEN else LEVELLED_OFF, numbers
    if to_come < LEVELLED:
        return True, FROZEN_BY_DECAY, numbers
    if decay:
        numbers["iterations_needed"] = _round_up(iterations_to_freeze(fall, iterations, decay))
    return False, STILL_FALLING, numbers


def run_length_needed(runs, iterations, decay):
    """From a run of `iterations`: the length (rounded up to two significant figures) at which the
    decay would freeze backprop's mean validation loss if it had not settled (settled), else
    `iterations` itself."""
    fine, _, numbers = settled(runs, iterations, decay)
    return iterations if fine else numbers.get("iterations_needed", iterations)


def judged_from(runs, decay):
    """The shortest evaluated run length from which the saved runs, cut there, could be judged
    (settled: backprop's mean curve levelled off, or the rest of the schedule would lower it by less
    than LEVELLED) at every longer evaluated length; None if not even the full runs could. A claim
    read off runs cut shorter than this stands on curves the book would not judge."""
    at = runs[(runs["split"] == "validation") & (runs["method"] == BP) & (runs["iteration"] > 0)]
    lengths = sorted(int(n) for n in at["iteration"].unique())
    flags = [settled(runs[runs["iteration"] <= n], n, decay)[0] for n in lengths]
    return first_for_good(flags, lengths)


def run_results(runs):
    """One row per finished run (method, seed): its lowest validation loss and its final test
    accuracy (%)."""
    val = runs[runs["split"] == "validation"].groupby(["method", "seed"])["loss"].min()
    test = runs[runs["split"] == "test"].sort_values("iteration").groupby(["method", "seed"])
    accuracy = test["accuracy"].last() if "accuracy" in runs else pd.Series(dtype=float)
    return pd.DataFrame({"lowest validation loss": val, "final test accuracy (%)": 100 * accuracy})


def paired_ratios(runs, fg=FG, bp=BP):
    """The paper's iteration measure on each pair alone (one seed: the same initial weights and
    data order for both methods) instead of on the mean curves: backprop's lowest validation loss
    on that seed, the first iteration each method's curve reaches it (I_b, I_f; I_f is NaN if
    forward gradient never does) and I_f / I_b (inf if never). One row per finished pair, by seed."""
    rows = []
    for seed in pairs_finished(runs, (fg, bp)):
        n = time_ratio(runs[runs["seed"] == seed], 1.0, 1.0, fg=fg, bp=bp)   # iterations only: no step times
        rows.append({"seed": seed, "level": n["level"], "I_b": n["I_b"], "I_f": n["I_f"], "I_f/I_b": n["I_ratio"]})
    return pd.DataFrame(rows, columns=["seed", "level", "I_b", "I_f", "I_f/I_b"]).set_index("seed")


def rank_correlation(x, y):
    """(rho, p): Spearman's rank correlation of x and y and its exact two-sided p-value, the share
    of the n! orderings of y whose |rho| is at least as large (n <= 8; no ties assumed). With five
    seeds, |rho| must reach 1 for p < 0.05: the numbers say how little five points can show."""
    import itertools
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or not 3 <= len(x) <= 8:
        raise ValueError(f"rank_correlation takes 3 to 8 pairs, got {len(x)} and {len(y)} values")
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)
    rx, ry = rank(x), rank(y)
    rho_of = lambda r: float(np.corrcoef(rx, r)[0, 1])
    rho = rho_of(ry)
    orderings = [rho_of(np.array(order)) for order in itertools.permutations(ry)]
    p = sum(abs(r) >= abs(rho) - 1e-12 for r in orderings) / len(orderings)
    return rho, p


POSSESSIVE = {BP: "backprop's", FG: "forward gradients'"}


def count_words(n, noun):
    """'1 run', '5 runs': a count and its noun, singular or plural."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def pct(x):
    """A share as a percentage to 2 significant figures: 42%, 1.5%, 0.31% (150% above 100)."""
    return f"{100 * x:.0f}%" if abs(x) >= 1 else f"{100 * x:.2g}%"


def _round_up(n, digits=2):
    """n rounded up to `digits` significant figures (69,123 -> 70,000)."""
    scale = 10 ** max(0, len(str(int(n))) - digits)
    return -(-int(n) // scale) * scale


NOT_LEARNED = "backprop had not learned"


def grade_time_to_loss(runs, timings, iterations, decay, n_classes=10, samples=2000):
    """Claim 4 on one experiment: {'verdict', 'reason', and the numbers behind them}. Not judged
    when backprop had not learned (reason NOT_LEARNED) or its curve had not settled (STILL_FALLING),
    or when the 95% interval of T_f/T_b contains 1; otherwise 'reason' says how backprop's curve
    settled (settled). On a CPU, a ratio that fails only by the step ratio reads NOT_ON_CPU
    (`step_decides`)."""
    ok_bp, acc_bp, bar = learned(runs, BP, n_classes)
    ok_fg, acc_fg, _ = learned(runs, FG, n_classes)
    ok, reason, settle = settled(runs, iterations, decay)
    numbers = {"acc_bp": acc_bp, "acc_fg": acc_fg, "chance_bar": bar, **settle}
    if not ok_bp:
        return {"verdict": NOT_JUDGED, "reason": NOT_LEARNED, **numbers}
    if not ok:
        return {"verdict": NOT_JUDGED, "reason": reason, **numbers}
    s = step_times(timings)
    ratio = time_ratio(runs, s[FG], s[BP])
    low, high, reached = bootstrap_time_ratio(runs, timings, samples=samples)
    numbers.update(ratio, low=low, high=high, reached=reached)
    word = "holds" if high < 1 else "does not hold" if low > 1 else NOT_JUDGED
    decides = word == "does not hold" and _the_step_decides(numbers, timings)
    return {"verdict": NOT_ON_CPU if decides else word, "reason": reason, "step_decides": decides, **numbers}


def _the_step_decides(numbers, timings):
    """Whether a time ratio that failed on a CPU failed by its device-dependent factor alone: the
    iteration factor passes (I_f/I_b <= 1, a property of the method) and the step ratio S_f/S_b > 1
    (of this device and engine) makes T_f/T_b > 1. Such a result does not reproduce the claim; it
    does not refute a claim made on a GPU either (as claims 3 and 5: speed_grade)."""
    on_cpu = "device" in timings and str(timings["device"].iloc[0]).startswith("CPU")
    return on_cpu and numbers["I_ratio"] <= 1 < numbers["S_ratio"]


def pairs_finished(runs, methods=(FG, BP)):
    """The seeds with a finished run of every method (a pair), sorted."""
    if runs.empty:
        return []
    have = runs.groupby("method")["seed"].apply(set)
    return sorted(set.intersection(*[have.get(m, set()) for m in methods]))


RUNS_MISSING, NO_STEP_TIMES = "planned pairs missing", "step times not measured"


def claim4_report(runs, timings, iterations, decay, planned_pairs, n_classes=10, samples=2000):
    """Claim 4 on one experiment from its raw runs and timing rounds: grade_time_to_loss's grade,
    reason and numbers, the pairs finished and planned, and the tolerance table (None when not
    graded). Partial evidence is not judged: fewer pairs than planned (reason RUNS_MISSING, with
    `single_runs`, the seeds with one method's run only) or no step times (NO_STEP_TIMES), with
    backprop's curve so far (`bp_settled`)."""
    pairs = pairs_finished(runs)
    counts = {"pairs": len(pairs), "planned_pairs": planned_pairs,
              "single_runs": int(runs.loc[~runs["seed"].isin(pairs), "seed"].nunique()) if not runs.empty else 0}
    if len(pairs) < planned_pairs or timings is None or timings.empty:
        bp_runs = runs[runs["method"] == BP] if not runs.empty else runs
        ok, _, settle = settled(bp_runs, iterations, decay) if not bp_runs.empty else (True, "", {})
        reason = RUNS_MISSING if len(pairs) < planned_pairs else NO_STEP_TIMES
        return {"verdict": NOT_JUDGED, "reason": reason, "bp_settled": ok, "table": None, **counts, **settle}
    paired = runs[runs["seed"].isin(pairs)]
    grade = grade_time_to_loss(paired, timings, iterations, decay, n_classes, samples)
    # as many resamples, from the same seed, as the grade's: the table's row at tolerance 0 is the grade's interval
    table = tolerance_table(paired, timings, samples=samples) if "T_ratio" in grade else None
    return {**grade, **counts, "table": table}


def step_costs(timings, fg=FG, bp=BP):
    """Claim 3 on one model from its raw timing rounds: R_f and R_b (a step's median time over
    the base call's, the paper's measure), S_f / S_b from each process and their spread, and the
    grade: 'holds' if every process measured S_f / S_b < 1, 'does not hold' if every one measured
    it above 1, else not judged (the processes disagree: the difference is within the noise)."""
    s = step_times(timings, fg, bp)
    base = s["base"]
    spread = step_ratio_spread(timings, fg, bp)
    per_process = spread["per process"]["S_f/S_b"]
    grade = ("holds" if (per_process < 1).all() else "does not hold" if (per_process > 1).all() else NOT_JUDGED)
    return {"R_f": s[fg] / base, "R_b": s[bp] / base, "S_f": s[fg], "S_b": s[bp], "base": base,
            "S_ratio": spread["mean"], "sd between": spread["sd between"], "sd within": spread["sd within"],
            "processes": len(per_process), "grade": grade, "per process": spread["per process"]}


def cost_table(rounds, memory=None, reference=BP):
    """One row per (model, name) from raw cost rounds (fglib.measure.cost_rounds; a `model` column
    optional): the median step time over the quiet rounds (fglib.timing.quiet), S / S_reference,
    and the memory table's columns beside it, if one is given (peak memory, and whatever else it
    records)."""
    if memory is None:
        memory = pd.DataFrame({"name": rounds["name"].unique()})
    if "model" not in rounds.columns:
        rounds, memory = rounds.assign(model=""), memory.assign(model="")
    rows = []
    for model_name, r in rounds.groupby("model", sort=False):
        median = quiet(r).groupby("name", sort=False)["seconds"].median()
        mem = memory[memory["model"] == model_name].set_index("name").drop(columns="model")
        for name, seconds in median.items():
            rows.append({"model": model_name, "method": name, "step time (ms)": 1e3 * seconds,
                         f"S / S_{reference}": seconds / median[reference], **mem.loc[name].to_dict()})
    table = pd.DataFrame(rows)
    return table.drop(columns="model") if (table["model"] == "").all() else table


def experiment_numbers(runs, timings, records, iterations, decay, planned_pairs, lr, n_classes=10):
    """What the verdict needs of one experiment saved raw, derived here and never stored: the
    step costs (claim 3) and the time to backprop's lowest loss (claim 4), with the device."""
    timings = whole_device(timings)
    report = claim4_report(runs, timings, iterations, decay, planned_pairs, n_classes)
    costs = step_costs(timings) if timings is not None and not timings.empty else None
    device = (timings["device"].iloc[0] if costs else
              records["device"].iloc[0] if records is not None and len(records) else "no device yet")
    return {"device": device, "lr": lr, "iterations": iterations, "runs": report["pairs"], "pairs": report["pairs"],
            "ratio": costs["S_ratio"] if costs else math.nan, "ratio_sd": costs["sd between"] if costs else math.nan,
            "processes": len(costs["per process"]) if costs else 0,
            "R_f": costs["R_f"] if costs else math.nan, "R_b": costs["R_b"] if costs else math.nan,
            "runtime_verdict": costs["grade"] if costs else NOT_RUN, "engine": "auto",
            "time_verdict": report["verdict"], "time_verdict_reason": report["reason"],
            "iterations_needed": report.get("iterations_needed", math.nan),
            "decay_spent": report.get("spent", math.nan),
            "bp_lowest_at_end": bool(report.get("I_b", math.nan) >= iterations),   # T_b is the run's end
            "I_ratio": report.get("I_ratio", math.nan), "I_ratio_ci": math.nan,
            "I_per_iteration": per_iteration(runs) if not runs.empty else math.nan,
            "S_ratio": costs["S_ratio"] if costs else math.nan, "T_ratio": report.get("T_ratio", math.nan),
            "T_low": report.get("low", math.nan), "T_high": report.get("high", math.nan),
            **(final_numbers(runs) if not runs.empty else {})}


ALIKE = (0.67, 1.5)  # forward gradient / backprop iterations to a loss level that count as "alike"


def alike(ratio):
    """Whether an iteration ratio I_f / I_b lies within ALIKE (the two methods alike per iteration)."""
    return math.isfinite(ratio) and ALIKE[0] <= ratio <= ALIKE[1]


FUNCTION_LEVELS = {"beale": 1e-3, "rosenbrock": 1e-2}   # claim 2: the loss each method must get below


def function_reach(curves, levels=FUNCTION_LEVELS):
    """Claim 2's measure, from the test-function chapter's raw curves (a `function` column):
    {function: {method: median over runs of the first recorded iteration whose loss is below
    the function's level}}; a method none of whose runs got there is left out."""
    reach = {}
    for name, level in levels.items():
        c = curves[(curves["function"] == name) & (curves["loss"] < level)]
        first = c.groupby(["method", "run"])["iteration"].min()
        reach[name] = {m: float(v) for m, v in first.groupby("method").median().items()}
    return reach


def function_numbers(curves):
    """What the verdict grades claim 2 with, derived from the raw curves now: the reach (above),
    the levels, the runs per method, how many runs of each method diverged on each function
    ({function: {method: count}}), the device, and backprop's time per iteration over forward
    gradient's on each function (each run's last recorded time over its last iteration; median
    over runs; not graded: on two parameters it measures the device's Python overhead)."""
    last = curves.sort_values("iteration").groupby(["function", "method", "run"]).tail(1)
    per_it = (last["time"] / last["iteration"]).groupby([last["function"], last["method"]]).median()
    speed = {name: float(per_it[(name, BP)] / per_it[(name, FG)]) for name in curves["function"].unique()
             if (name, BP) in per_it and (name, FG) in per_it}
    diverged = {}
    if "diverged" in curves:   # runs that diverged, per function and method (the reach leaves them out)
        per_run = curves.groupby(["function", "method", "run"])["diverged"].any()
        diverged = {f: {m: int(n) for m, n in g.droplevel(0).items()}
                    for f, g in per_run.groupby(level=[0, 1]).sum().groupby(level=0)}
    return {"device": curves["device"].iloc[0] if "device" in curves else "CPU", "levels": dict(FUNCTION_LEVELS),
            "runs": int(curves.groupby("method")["run"].nunique().max()), "reach": function_reach(curves),
            "backprop_over_fg_time_per_iteration": speed, "diverged": diverged}


def final_numbers(runs):
    """Each method's mean final validation loss and test accuracy: {'val_fg', 'val_bp', 'acc_fg', 'acc_bp'}."""
    out = {}
    for method, short in ((FG, "fg"), (BP, "bp")):
        curve = mean_curve(runs, method)
        out[f"val_{short}"] = float(curve.iloc[-1]) if len(curve) else math.nan
        out[f"acc_{short}"] = learned(runs, method)[1] if len(curve) else math.nan
    return out


def per_iteration_at(runs, tolerances=TOLERANCES):
    """(I_f / I_b, tolerance) over the paired runs, from the runs alone (no step times): the
    optimisation's share of T_f / T_b, which carries over between devices. Taken at the smallest
    tolerance at which forward gradient's mean curve reaches backprop's lowest x (1 + tolerance):
    'alike per iteration' is a statement about the whole curves, and a curve that ends 0.05%
    above backprop's lowest is alike to within 0.5%. (inf, None) if it never comes within the
    largest tolerance; (nan, None) before a pair has finished."""
    pairs = pairs_finished(runs)
    if not pairs:
        return math.nan, None
    paired = runs[runs["seed"].isin(pairs)]
    for tolerance in tolerances:
        ratio = time_ratio(paired, 1.0, 1.0, tolerance)["I_ratio"]
        if math.isfinite(ratio):
            return ratio, tolerance
    return math.inf, None


def per_iteration(runs):
    """I_f / I_b as per_iteration_at gives it, without its tolerance."""
    return per_iteration_at(runs)[0]


def devices_said(devices):
    """Device names as prose: each said once, in order, joined with 'and' ('' for none); one
    machine at several thread counts said once, fewest first: 'CPU (x86_64, 1 and 2 threads)'. Stamps written
    before device_name said "1 thread" spell it "1 threads": the same device."""
    threads = {}   # "CPU (x86_64" -> thread counts, in order; any other name -> [None]
    for name in devices:
        found = re.fullmatch(r"(.*), (\d+) threads?\)", name)
        machine, count = (found.group(1), int(found.group(2))) if found else (name, None)
        threads.setdefault(machine, [])
        if count not in threads[machine]:
            threads[machine].append(count)
    def said(machine, counts):
        if counts == [None]:
            return machine
        counted = " and ".join(str(c) for c in sorted(counts))
        return f"{machine}, {counted} thread{'' if counts == [1] else 's'})"
    return " and ".join(said(m, c) for m, c in threads.items())


MEMORY_SAME = 0.001   # the paper: "under 0.1%" difference between the two methods' memory


FG_IN_PLACE, FD_IN_PLACE = "forward gradient, in place", "finite difference, in place"   # registry labels
FG_REGENERATED = "forward gradient, regenerated"   # fg(regenerate=True, draw='blocks'): fglib.book.runs
BP_IN_PLACE = "backprop, in place"   # registry label of bp_inplace


def memory_differences(table):
    """Per network: each method's step memory (paper's sense, MiB) and forward gradient's, the
    checkpointed backprop's, the regenerated forward gradient's and the in-place steps' difference
    from plain backprop, relative to backprop's."""
    wide = table.pivot_table(index="network", columns="method", values="total", sort=False) / 2**20
    out = pd.DataFrame({"backprop (MiB)": wide[BP], "forward gradient (MiB)": wide[FG],
                        "FG vs BP": wide[FG] / wide[BP] - 1})
    ckpt = "backprop, checkpointed"
    if ckpt in wide:
        out["checkpointed BP (MiB)"] = wide[ckpt]
        out["FG vs checkpointed BP"] = wide[FG] / wide[ckpt] - 1
    for label, short in ((FG_REGENERATED, "FG regenerated"), (FG_IN_PLACE, "FG in place"),
                         (FD_IN_PLACE, "MeZO in place"), (BP_IN_PLACE, "BP in place")):   # the leaner steps
        if label in wide:
            out[f"{short} (MiB)"] = wide[label]
            out[f"{short} vs BP"] = wide[label] / wide[BP] - 1
    return out


def grade_memory(table, same=MEMORY_SAME):
    """Claim 6: 'holds' if forward gradient's step memory is within `same` of backprop's on every
    network, 'does not hold' if on none, else 'partly'."""
    return _grade(abs(d) < same for d in memory_differences(table)["FG vs BP"])


FG_FORWARD_AD = "forward gradient (forward_ad)"   # as fglib.book.experiments.depth_rounds names it


def depth_runs(rounds):
    """The depth sweep per (depth, run), from its raw timing rounds: the median seconds of each
    call over the run's quiet rounds, and R = step / base (the paper's measure) for each method."""
    calm = pd.concat([quiet(g) for _, g in rounds.groupby(["depth", "run"])])
    wide = calm.pivot_table(index=["depth", "run"], columns="name", values="seconds", aggfunc="median")
    out = pd.DataFrame({"base": wide["base"], "R_f": wide[FG] / wide["base"], "R_b": wide[BP] / wide["base"]})
    out["R_f/R_b"] = out["R_f"] / out["R_b"]
    if FG_FORWARD_AD in wide:
        out["R_f/R_b (forward_ad)"] = wide[FG_FORWARD_AD] / wide[BP]
    return out.reset_index()


def depth_costs(rounds):
    """Claim 5's numbers per depth: R_f, R_b and R_f/R_b = S_f/S_b as step_costs derives them for
    a model, each run (fresh weights and mini-batch) counted as a process: the geometric mean over
    runs of each run's ratio of medians, with the sd between runs; and R_f/R_b with PyTorch's
    forward_ad beside it where it was timed."""
    rows = []
    for depth, at in rounds.groupby("depth"):
        at = at.assign(process=at["run"])
        c = step_costs(at)
        row = {"depth": int(depth), "base (ms)": 1e3 * c["base"], "R_f": c["R_f"], "R_b": c["R_b"],
               "R_f/R_b": c["S_ratio"], "sd between runs": c["sd between"], "runs": c["processes"]}
        if FG_FORWARD_AD in set(at["name"]):
            row["R_f/R_b (forward_ad)"] = step_ratio_spread(at, FG_FORWARD_AD, BP)["mean"]
        rows.append(row)
    return pd.DataFrame(rows)


def grade_depth(table, subnormal=None, flushed=None):
    """Claim 5 ('R_f/R_b < 1 as depth grows to 100'): 'holds' if R_f/R_b < 1 at every depth,
    'partly' at some, 'does not hold' at none, the depths counted as graded_depths counts them."""
    return grade_ratios(graded_depths(table, subnormal, flushed)[0])


def graded_depths(table, subnormal=None, flushed=None):
    """(R_f/R_b per depth as claim 5 grades it, depth_numbers): where the deepest network's
    activations were subnormal numbers (`subnormal`, on a CPU), that point times the processor
    rather than the methods, and counts at its timing with subnormals flushed to zero when one was
    measured (numbers['graded_flushed'])."""
    numbers = depth_numbers(table, subnormal, flushed)
    ratios = table.set_index("depth")["R_f/R_b"].copy()
    numbers["graded_flushed"] = bool(numbers["subnormal"] and math.isfinite(numbers["flushed_last"]))
    if numbers["graded_flushed"]:
        ratios[numbers["deepest"]] = numbers["flushed_last"]
    return ratios, numbers


def depth_numbers(table, subnormal=None, flushed=None):
    """Claim 5's numbers from depth_costs' table: R_f/R_b at the shallowest and deepest depths, its
    range, the depths where it was below 1 and the largest sd between runs; with
    experiments.subnormal_check's row (`subnormal`), whether the deepest network computed with
    subnormal numbers and how many times more slowly a forward pass ran then; and with depth_costs
    of rounds timed with subnormals flushed to zero (`flushed`, one thread), R_f/R_b at the deepest
    depth then, beside a shallower depth timed both ways (the control for the thread count)."""
    first, last = table.iloc[0], table.iloc[-1]
    out = {"first_depth": int(first["depth"]), "first": float(first["R_f/R_b"]), "deepest": int(last["depth"]),
           "last": float(last["R_f/R_b"]), "low": float(table["R_f/R_b"].min()), "high": float(table["R_f/R_b"].max()),
           "below_1_at": [int(d) for d in table.loc[table["R_f/R_b"] < 1, "depth"]],
           "sd_max": float(table["sd between runs"].max()), "subnormal": False, "subnormal_slowdown": math.nan,
           "flushed_last": math.nan, "control_depth": math.nan, "control_kept": math.nan, "control_flushed": math.nan}
    if subnormal is not None and len(subnormal):
        row = subnormal.iloc[0]
        out["subnormal"] = bool(row["largest |activation|, last hidden layer"] < row["smallest normal float32"])
        out["subnormal_slowdown"] = float(row["forward (ms), subnormals kept"] / row["forward (ms), subnormals flushed"])
    if flushed is not None and len(flushed) and out["deepest"] in set(flushed["depth"]):
        at, kept = flushed.set_index("depth")["R_f/R_b"], table.set_index("depth")["R_f/R_b"]
        out["flushed_last"] = float(at[out["deepest"]])
        controls = [d for d in at.index if d != out["deepest"] and d in kept.index]
        if controls:
            out.update(control_depth=int(controls[-1]), control_kept=float(kept[controls[-1]]),
                       control_flushed=float(at[controls[-1]]))
    return out


# Do K directions pay for themselves? (the variance chapter, from its saved K sweep)


def k_label(k):
    """'forward gradient, K = 4'."""
    return f"forward gradient, K = {k}"


def _pair_ratio(k, i_k, k1, i_1, budget):
    """Directions to the target of run r with K over those with k1, or a bound on it when one
    run missed the target within its budget of directions: ('=', value), ('<', upper bound),
    ('>', lower bound), or None when both missed."""
    hit_k, hit_1 = math.isfinite(i_k), math.isfinite(i_1)
    if hit_k and hit_1:
        return "=", k * i_k / (k1 * i_1)
    if hit_k:  # k1 needs more than its whole budget: k1 I(k1) > budget
        return "<", k * i_k / budget
    if hit_1:
        return ">", budget / (k1 * i_1)
    return None


def k_pays(curves, finals, step_ms, target_loss, budget):
    """For each K above the smallest (k1), at each one's best rate: the directions to the
    validation-loss target relative to k1's, K I(K) / (k1 I(k1)), pair by pair (run r against
    run r: same seed) with its 95% interval; the engine factor S(K) k1 / (K S(k1)); their
    product T(K) / T(k1); and a verdict: 'pays for itself' when the whole interval of T(K)/T(k1)
    lies below 1, 'does not pay' when above, 'cannot tell' when it straddles 1 (or one run gives
    no interval). Every run draws `budget` directions, so a run that missed the target still
    bounds its ratio: when only k1's runs missed, the column says '<' and the interval is that
    of an upper bound (only 'pays for itself' or 'cannot tell'); when only K's missed, '>'.
    'not judged' when both runs of a pair missed, the bounds point both ways, or a run started
    at or below the target."""
    from .sweep import best_final_rates, iterations_to_targets
    best = best_final_rates(finals).set_index("method")["lr"]
    ks = finals.dropna(subset=["K"]).groupby("method")["K"].first().astype(int).sort_values()
    reach = iterations_to_targets(curves, {"loss": [target_loss]})

    def runs(label):
        d = reach[(reach["method"] == label) & (reach["lr"] == best[label])]
        return d.sort_values("run")["iterations"].to_numpy()

    k1 = int(ks.iloc[0])
    rows = []
    for label, k in ks.iloc[1:].items():
        engine = step_ms[label] * k1 / (k * step_ms[k_label(k1)])
        i_k, i_1 = runs(label), runs(k_label(k1))
        row = {"K": k, "bound": "", "directions / those of K = 1": math.nan, "±95%": math.nan,
               "engine factor": engine, "T / T(K = 1)": math.nan, "verdict": ""}
        pairs = [_pair_ratio(k, a, k1, b, budget) for a, b in zip(i_k, i_1)]
        kinds = {p[0] for p in pairs if p} - {"="}
        if not len(i_k) or len(i_k) != len(i_1) or None in pairs:
            row["verdict"] = "not judged: both runs of a pair missed the target"
        elif 0 in (*i_k, *i_1):
            row["verdict"] = "not judged: a run started at or below the target"
        elif len(kinds) > 1:
            row["verdict"] = "not judged: the runs that missed bound the ratio both ways"
        else:
            bound = kinds.pop() if kinds else "="
            mean, half, _ = mean_ci([v for _, v in pairs])
            low, high = (mean - half) * engine, (mean + half) * engine
            pays = high < 1 and bound in "=<"
            loses = low > 1 and bound in "=>"
            row.update({"bound": bound, "directions / those of K = 1": mean, "±95%": half,
                        "T / T(K = 1)": mean * engine,
                        "verdict": "pays for itself" if pays else "does not pay" if loses else "cannot tell"})
        rows.append(row)
    return pd.DataFrame(rows).rename(columns=lambda c: c.replace("K = 1", f"K = {k1}"))


def compare_errors(table, a, b):
    """(difference of mean test errors a - b in points, the sum of their sds, a word): 'lower'
    or 'higher' only when the difference exceeds the sum of the sds, 'indistinguishable' when
    it does not, 'one run' when there is no spread to compare with."""
    t = table.set_index("method")
    diff, spread = t.loc[a, "test error (%)"] - t.loc[b, "test error (%)"], t.loc[a, "± sd"] + t.loc[b, "± sd"]
    if not math.isfinite(spread):
        return diff, spread, "one run"
    word = "indistinguishable" if abs(diff) <= spread else ("lower" if diff < 0 else "higher")
    return diff, spread, word


def ren_local_verdict(table):
    """Ren et al.'s finding 2 (local losses help), from two comparisons of test error (compare_errors):
    local FG-W against FG-W and local FG-A against FG-A. table from sweep.at_best_rates."""
    found = {compare_errors(table, l, g)[2] for g, l in (("FG-W", "local FG-W"), ("FG-A", "local FG-A"))}
    return ("mixed" if {"lower", "higher"} <= found else "holds" if found == {"lower"} else
            "partly" if "lower" in found else "does not hold here" if found == {"higher"} else
            "does not hold for one, cannot tell for the other" if "higher" in found else
            "cannot tell from these runs")


MATCH_VERDICT = {"higher": "does not hold here", "lower": "holds (FG better)", "indistinguishable": "holds here",
                 "one run": "cannot tell from one run"}
HELPED = {"lower": "holds here", "higher": "does not hold here", "indistinguishable": "cannot tell",
          "one run": "cannot tell from one run"}   # "here": this network and run length, not Ren et al.'s


def ren_findings(errors, table):
    """Ren et al.'s three findings (numbered as the local-losses chapter quotes them from their
    abstract), checked: one row per measurement, with its number, the spread it is judged against and the
    verdict of that measurement (finding 2's two rows make one verdict together: ren_local_verdict). errors
    from local.layer_errors, table from sweep.at_best_rates.

    1  FG-W's relative error / FG-A's, smallest over layers and points (holds when above 1 everywhere);
    2  test error, local FG-W - FG-W and local FG-A - FG-A, in points (compare_errors; ren_local_verdict);
    3  test error, local FG-A - backprop, in points."""
    ratio = errors.pivot_table(index=["point", "layer"], columns="method", values="relative error")
    pairs = [("FG-W", "FG-A"), ("local FG-W", "local FG-A")]
    ratios = pd.concat([(ratio[w] / ratio[a]).dropna() for w, a in pairs])
    rows = [{"finding": 1, "measured": "FG-W's error / FG-A's (smallest)", "ours": ratios.min(), "sum of sds": math.nan,
             "verdict": "holds" if bool((ratios > 1).all()) else "does not hold on every layer"}]
    for g, l in (("FG-W", "local FG-W"), ("FG-A", "local FG-A")):
        diff, spread, word = compare_errors(table, l, g)
        rows.append({"finding": 2, "measured": f"{l} - {g} (points)", "ours": diff, "sum of sds": spread,
                     "verdict": HELPED[word]})
    diff, spread, word = compare_errors(table, "local FG-A", "backprop")
    rows.append({"finding": 3, "measured": "local FG-A - backprop (points)", "ours": diff, "sum of sds": spread,
                 "verdict": MATCH_VERDICT[word]})
    return pd.DataFrame(rows)


def finetune_gaps(table, fg="FG, normal", bp="backprop"):
    """The fine-tuning chapter's question, per regime: from at_best_rates rows with a `regime`
    column, forward gradients' (`fg`) and backprop's test error (%), the gap in points with its
    spread (the sum of the two sds over runs), and the forward-gradient variant with the lowest test
    error and its gap."""
    rows = []
    for regime, t in table.groupby("regime", sort=False):
        t = t.set_index("method")
        if fg not in t.index or bp not in t.index:
            continue
        variants = t[t.index.str.startswith("FG") | (t.index == "MeZO")]
        best = variants["test error (%)"].idxmin()
        base = t.loc[bp, "test error (%)"]
        rows.append({"regime": regime, "forward gradient (%)": t.loc[fg, "test error (%)"], "backprop (%)": base,
                     "gap (points)": t.loc[fg, "test error (%)"] - base,
                     "± (sum of sds)": t.loc[fg, "± sd"] + t.loc[bp, "± sd"],
                     "runs": int(min(t.loc[fg, "runs"], t.loc[bp, "runs"])) if "runs" in t else math.nan,
                     "best variant": best, "its gap (points)": t.loc[best, "test error (%)"] - base})
    return pd.DataFrame(rows)


def combine_table(table):
    """Averaging against projecting a step's K tangents, per regime and K (at_best_rates rows with a
    `regime` column, labels 'FG, K = k, mean' and 'FG, K = k, projected'): both test errors (%),
    the sum of their sds over runs, and which is lower: 'averaging' or 'projecting' only when the
    difference exceeds that sum, 'within the spread' when it does not, 'one run' with no spread.
    Where a `runs` column gives fewer than MIN_RUNS_FOR_SPREAD runs for either, a difference beyond
    the spread reads 'averaging, tentative (2 runs)': too few runs to count it."""
    rows = []
    for regime, t in table.groupby("regime", sort=False):
        t = t.set_index("method")
        ks = sorted({int(m.split("K = ")[1].split(",")[0]) for m in t.index if m.startswith("FG, K = ")})
        for k in ks:
            mean, proj = f"FG, K = {k}, mean", f"FG, K = {k}, projected"
            if not {mean, proj} <= set(t.index):
                continue
            e_m, e_p = t.loc[mean, "test error (%)"], t.loc[proj, "test error (%)"]
            spread = t.loc[mean, "± sd"] + t.loc[proj, "± sd"]
            lower = {None: "one run", "lower": "projecting", "higher": "averaging"}.get(
                against(e_p, t.loc[proj, "± sd"], e_m, t.loc[mean, "± sd"]), "within the spread")
            runs = int(min(t.loc[mean, "runs"], t.loc[proj, "runs"])) if "runs" in t.columns else math.inf
            if lower in ("projecting", "averaging") and runs < MIN_RUNS_FOR_SPREAD:
                lower = f"{lower}, tentative ({runs} runs)"
            rows.append({"regime": regime, "K": k, "averaged (%)": e_m, "projected (%)": e_p,
                         "± (sum of sds)": spread, "lower": lower})
    return pd.DataFrame(rows, columns=["regime", "K", "averaged (%)", "projected (%)", "± (sum of sds)", "lower"])


def against(mean, sd, reference, reference_sd):
    """How a mean over runs compares with a reference mean: 'lower' or 'higher' where the two differ
    by more than the sum of their sds over runs, else 'within the spread'; None where either sd is
    missing (a single run has no spread)."""
    if not math.isfinite(sd + reference_sd):
        return None
    return "within the spread" if abs(mean - reference) <= sd + reference_sd else "lower" if mean < reference else "higher"


def k_scratch_errors(k_finals):
    """The variance chapter's K sweep (training from scratch; raw finals with K, lr, run, status,
    validation_loss, test_accuracy): each K's test error (%) at its own best rate (the lowest mean
    final validation loss), its sd over runs, and how it compares with K = 1's: 'lower' or
    'higher' where the two differ by more than the sum of their sds, else 'within the spread'
    (missing for K = 1 itself, or where either has a single run)."""
    ran = k_finals[k_finals["status"] == "ran"]
    rows = []
    for k, t in ran.groupby("K"):
        lr = t.groupby("lr")["validation_loss"].mean().idxmin()
        err = 100 * (1 - t[t["lr"] == lr]["test_accuracy"])
        rows.append({"K": int(k), "test error (%)": err.mean(), "± sd": err.std() if len(err) > 1 else math.nan})
    out = pd.DataFrame(rows, columns=["K", "test error (%)", "± sd"])
    one = out[out["K"] == 1]
    if len(one):
        e1, s1 = one["test error (%)"].iloc[0], one["± sd"].iloc[0]
        out["against K = 1"] = [None if k == 1 else against(e, s, e1, s1)
                                for k, e, s in zip(out["K"], out["test error (%)"], out["± sd"])]
    return out


def pairing_words(label):
    """A (method, optimiser) label in prose: 'forward gradient, Adam' -> 'forward gradients with Adam'."""
    method, _, optimiser = label.partition(", ")
    method = {"forward gradient": "forward gradients"}.get(method, method)
    return f"{method} with {optimiser}" if optimiser else method


MIN_RUNS_FOR_SPREAD = 3   # fewer runs per method give a standard deviation too rough to call a change beyond it


def equal_memory_budget(table, costs, regime="all layers", lean=BP_IN_PLACE):
    """Each method of `regime` at an equal memory budget: (a table of its whole step memory, test
    error, runs reaching the target and T/T_backprop at its best rate, lightest first; its numbers).
    `table` is at_best_rates' rows (regime, method, test error (%), reached 'k/n', T / T_backprop),
    `costs` the step costs (regime, method, total (MiB)). The numbers: 'lighter', the methods whose
    step held less than `lean`'s (the leanest backprop); 'reached', the methods other than backprop
    whose every run reached the target; 'gap', the fewest points of test error by which a lighter
    method trailed `lean`, rounded down to whole points (nan where none is lighter)."""
    at = table[table["regime"] == regime].set_index("method")
    held = costs[costs["regime"] == regime].set_index("method")["total (MiB)"].drop("inference", errors="ignore")
    budget = pd.DataFrame({"step memory (MiB)": held, "test error (%)": at["test error (%)"],
                           "reached": at["reached"], "T / T_backprop": at["T / T_backprop"]})
    budget = budget.dropna(subset=["test error (%)"]).sort_values("step memory (MiB)").rename_axis("method")
    lean_mib = budget["step memory (MiB)"].get(lean, math.nan)
    lighter = budget[budget["step memory (MiB)"] < lean_mib]
    whole = [int(r.split("/")[0]) == int(r.split("/")[1]) for r in budget["reached"]]
    gap = lighter["test error (%)"].min() - budget["test error (%)"].get(lean, math.nan) if len(lighter) else math.nan
    return budget.reset_index(), {
        "lighter": sorted(lighter.index),
        "reached": sorted(m for m, full in zip(budget.index, whole) if full and not m.startswith(BP)),
        "gap": float(math.floor(gap)) if math.isfinite(gap) else math.nan}


def gap_change(gaps, regime, reference="from scratch"):
    """'narrowed', 'widened' or 'about the same', the gap of `regime` against `reference`'s, a change
    counting only beyond the two gaps' spreads together; 'too few runs' where either regime had
    fewer than MIN_RUNS_FOR_SPREAD runs per method (two runs give one degree of freedom per sd)."""
    g = gaps.set_index("regime")
    change = g.loc[regime, "gap (points)"] - g.loc[reference, "gap (points)"]
    spread = g.loc[regime, "± (sum of sds)"] + g.loc[reference, "± (sum of sds)"]
    runs = min(g.loc[regime].get("runs", math.inf), g.loc[reference].get("runs", math.inf))
    if runs < MIN_RUNS_FOR_SPREAD:
        return "too few runs"
    if not math.isfinite(spread) or abs(change) <= spread:
        return "about the same" if math.isfinite(spread) else "not judged (one run: no spread)"
    return "narrowed" if change < 0 else "widened"
