"""A learning-rate sweep for each method separately, and time to fixed targets at each one's
best rate, decomposed as T = I x S.

The paper gave both methods the same learning rate. A fair second look tunes each on its own:

- Each method's rates run in increasing order, with `runs` seeded runs per rate (run r has
  seed `seed + r` for both methods: the same initial weights and data order), up to and
  including the first rate at which a run diverges; higher rates are skipped. A grid that
  reaches divergence has its best rate inside it, unless the best is its lowest rate.
- The targets are fixed before the sweep runs (e.g. validation loss 0.5, validation accuracy
  90%), not read off the results, so neither method's run length decides them.
- For each target and method, the best rate is the one whose runs all reach the target in the
  fewest iterations on average (I, read on a log-spaced evaluation schedule). Step time S does
  not depend on the rate, so that rate also has the shortest time to target.
- At the two best rates, I_f / I_b is taken pair by pair (same seed) with its mean and 95%
  interval, and T_f / T_b = (I_f / I_b) x (S_f / S_b) with S from interleaved step timings.
  Where forward gradients never reach a target within the run, there is no ratio: only the
  lower bound (run length / I_b) that the run implies.
"""
import math

import numpy as np
import pandas as pd

from .. import checks
from ..to_target import crossing, eval_schedule, mean_ci
from ..registry import LABELS
from .experiments import run_training
from .report import rate_text
from .tables import significant

DIVERGED, SKIPPED, RAN = "diverged", "skipped: above a divergent rate", "ran"


def lr_sweep(model_name, data, rates, runs=3, iterations=2000, eval_points=40, seed=0,
             device="cpu", progress=False, **kwargs):
    """rates: {'fg': [...], 'bp': [...]}. Returns (curves, finals): curves with an `lr` column;
    finals one row per (method, lr, run) with its `status` (ran, diverged or skipped)."""
    if not isinstance(rates, dict) or not rates:
        raise TypeError(f"rates must be a dict {{'fg': [...], 'bp': [...]}}, got {rates!r}")
    rates = {checks.choice("rates key", m, LABELS): sorted(checks.rates(f"rates[{m!r}]", r))
             for m, r in rates.items()}
    eval_at = eval_schedule(checks.count("iterations", iterations), checks.count("eval_points", eval_points))

    def train_at(m, lr):
        return run_training(model_name, data, lr, runs, iterations, seed=seed, methods=(m,), device=device,
                            progress=progress, eval_at=eval_at, **kwargs)
    return sweep_rates(train_at, rates, label=LABELS.get)


def sweep_rates(train_at, rates, label=str):
    """The sweep rule, for any training: each key's rates in increasing order, up to and including
    the first rate at which train_at(key, lr) raises FloatingPointError (a run diverged); the
    higher rates are skipped. train_at returns (curves, finals) of that key at that rate. Returns
    (curves, finals) with an `lr` column, finals with each rate's `status`, labelled label(key)."""
    curves, finals = [], []
    for key, key_rates in rates.items():
        status = RAN
        for lr in sorted(key_rates):
            if status != RAN:
                finals.append(pd.DataFrame([{"method": label(key), "run": -1, "lr": lr, "status": SKIPPED}]))
                continue
            try:
                c, f = train_at(key, lr)
                curves.append(c.assign(lr=lr))
                finals.append(f.assign(lr=lr, status=RAN))
            except FloatingPointError:
                status = DIVERGED
                finals.append(pd.DataFrame([{"method": label(key), "run": -1, "lr": lr, "status": DIVERGED}]))
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()   # every rate may diverge
    return curves, pd.concat(finals, ignore_index=True)


def rates_to_run(finals, rates, label=str):
    """What a saved sweep still lacks of a grid: {key: its rates with no saved row}, leaving out
    those at or above a saved divergent rate (the sweep rule would have skipped them). A grid
    widened after a sweep ran (its best rate sat at the grid's edge) runs only its new rates."""
    todo = {}
    for key, key_rates in rates.items():
        done = finals[finals["method"] == label(key)] if not finals.empty else finals
        saved = set(done["lr"].round(12)) if not done.empty else set()
        diverged = done.loc[done["status"] == DIVERGED, "lr"].min() if not done.empty else math.nan
        new = [lr for lr in sorted(key_rates) if round(lr, 12) not in saved and not lr >= diverged]
        if new:
            todo[key] = new
    return todo


def runs_to_add(finals, rates, runs, label=str):
    """What a saved sweep lacks once `runs` has grown: {key: (n, rates)}, the rates of the key's grid
    that ran with only n < runs runs saved (each, in increasing order). Run r has seed seed + r, so
    runs n, ..., runs - 1 are a sweep of runs - n runs from seed seed + n (shifted by add_runs).
    Rates that diverged or were skipped stay as they are: the sweep rule stopped there."""
    todo = {}
    for key, key_rates in rates.items():
        done = finals[(finals["method"] == label(key)) & (finals["status"] == RAN)] if not finals.empty else finals
        if done.empty:
            continue
        counts = done.groupby(done["lr"].round(12))["run"].nunique()
        short = sorted(lr for lr in key_rates if counts.get(round(lr, 12), runs) < runs)
        if short:
            todo[key] = (int(counts[round(short[0], 12)]), short)
    return todo


def add_runs(sweep_of, todo):
    """The runs runs_to_add found missing: sweep_of(key, rates, n) sweeps `rates` from seed seed + n
    (runs - n runs), and its runs are renumbered n, n + 1, ... (a diverged or skipped row keeps run
    -1). Returns (curves, finals), as a sweep run with every run from the start would give them."""
    curves, finals = [], []
    for key, (n, key_rates) in todo.items():
        c, f = sweep_of(key, key_rates, n)
        curves.append(c.assign(run=c["run"] + n) if not c.empty else c)
        finals.append(f.assign(run=f["run"].where(f["run"] < 0, f["run"] + n)))
    return (pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
            pd.concat(finals, ignore_index=True) if finals else pd.DataFrame())


def extend_sweep(saved, fresh):
    """A saved sweep (curves, finals; empty if nothing is saved) with the rates run since, fresh
    (curves, finals), appended; each table ordered by data set or regime (where there is such a
    column) and method, each in the order it first appears (saved first), then by rate and run,
    so that a sweep run in several sittings reads as the sweep run in one."""
    if saved[1].empty:
        saved = (fresh[0].iloc[:0], fresh[1].iloc[:0])
    curves, finals = (pd.concat([a, b], ignore_index=True) for a, b in zip(saved, fresh))
    keys = [c for c in ("data", "regime") if c in finals] + ["method"]
    rank = {k: {v: i for i, v in enumerate(pd.unique(finals[k]))} for k in keys}
    by_rank = lambda col: col.map(rank[col.name]) if col.name in rank else col

    def order(t, extra):
        return t.sort_values([*keys, "lr", *extra], key=by_rank, kind="stable", ignore_index=True)
    return order(curves, [c for c in ("run", "iteration") if c in curves]), order(finals, ["run"])


def complete_sweep(folder, model_name, grid, run, device="cpu", remeasure=False):
    """A model's sweep over `grid`, from what is saved: run(todo) -> (curves, finals) sweeps only the
    rates the saved sweep lacks (rates_to_run; all of them with remeasure), the result is saved
    (save_sweep; each row keeps the device it ran on) and returned as load_sweep reads it."""
    from .runs import load_table
    saved = tuple(pd.DataFrame() if remeasure else load_table(folder, "lr_sweep", f"{model_name}-{name}")
                  for name in ("curves.csv.gz", "finals.csv"))
    todo = grid if saved[1].empty else rates_to_run(saved[1], grid, label=LABELS.get)
    if todo:
        fresh = run(todo)
        save_sweep(folder, model_name, *(fresh if saved[1].empty else extend_sweep(saved, fresh)), device)
    return load_sweep(folder, model_name)


def target_label(column, level):
    """'validation loss ≤ 0.5' or 'validation accuracy ≥ 90%'."""
    return f"validation loss ≤ {level:g}" if column == "loss" else f"validation accuracy ≥ {100 * level:g}%"


def iterations_to_targets(curves, targets, interpolate=False):
    """targets: {'loss': [levels], 'accuracy': [levels]}. One row per (target, method, lr, run):
    the first evaluated iteration at which the validation loss is at or below the level (or the
    accuracy at or above it), NaN when the run never got there. interpolate=True reads it off the
    straight line between that evaluation and the one before (as grading's time ratios do), so
    that two runs that cross the level between the same two evaluations are told apart."""
    unknown = set(targets) - {"loss", "accuracy"}
    if unknown:
        raise ValueError(f"targets may only have the keys 'loss' and 'accuracy', got {sorted(unknown)}")
    val = curves[curves["split"] == "validation"]
    rows = []
    for column, levels in targets.items():
        for level in checks.rates(f"targets[{column!r}]", levels):
            hit = val["loss"] <= level if column == "loss" else val["accuracy"] >= level
            first = val[hit].groupby(["method", "lr", "run"])["iteration"].min()
            if interpolate:
                first = pd.Series({key: _crossing(run.sort_values("iteration"), column, level)
                                   for key, run in val.groupby(["method", "lr", "run"])}, dtype=float).dropna()
            for key in val.groupby(["method", "lr", "run"]).groups:
                rows.append({"target": target_label(column, level), "method": key[0], "lr": key[1], "run": key[2],
                             "iterations": float(first.get(key, math.nan))})
    return pd.DataFrame(rows)


def _crossing(run, column, level):
    """The iteration at which one run's curve first reaches `level`, on the straight line between
    the evaluations around it (NaN if never; the first evaluation if it starts there)."""
    x, y = run["iteration"].to_numpy(dtype=float), run[column].to_numpy(dtype=float)
    if column == "accuracy":   # rising to the level is falling to it, negated
        y, level = -y, -level
    return crossing(x, y, level)


def best_rates(reach):
    """One row per (target, method): the rate whose runs all reached the target in the fewest
    iterations on average (on a tie, the lower rate), or NaN when no rate's runs all reached it."""
    rows = []
    for (target, method), d in reach.groupby(["target", "method"], sort=False):
        per_rate = d.groupby("lr")["iterations"].agg(["mean", "count", "size"])
        full = per_rate[per_rate["count"] == per_rate["size"]]
        best = full["mean"].idxmin() if len(full) else math.nan
        rows.append({"target": target, "method": method, "lr": best})
    return pd.DataFrame(rows)


def grid_edge(finals, method, lr):
    """'lowest' where `lr` is the lowest rate that ran for `method`, 'highest' where it is its
    highest with no divergent rate above it (a rate outside the grid might then be better), else
    None."""
    ran, diverged = _grid(finals, method)
    if not ran:
        return None
    return "lowest" if lr == ran[0] else "highest" if lr == ran[-1] and not diverged else None


def below_divergence(finals, method, lr):
    """Whether `lr` is the highest rate that ran for `method` and a rate above it diverged: a
    better rate may lie between the two, untried."""
    ran, diverged = _grid(finals, method)
    return bool(ran) and lr == ran[-1] and bool(diverged)


def _grid(finals, method):
    """`method`'s rates that ran, in increasing order, and whether any of its rates diverged."""
    mine = finals[finals["method"] == method]
    return sorted(mine.loc[mine["status"] == RAN, "lr"].unique()), (mine["status"] == DIVERGED).any()


def on_edge(finals, method, lr):
    """Whether `lr` sits at the edge of `method`'s grid (grid_edge)."""
    return grid_edge(finals, method, lr) is not None


def _floor_text(bound):
    """A lower bound rounded down, so that the rounded figure still holds: 67 for 67.04, 26 for
    26.8, 2.6 for 2.67."""
    return f"{math.floor(bound):,}" if bound >= 10 else significant(math.floor(bound * 10) / 10, 2)


def compare_at_best(curves, finals, targets, step_fg, step_bp, iterations,
                    fg="forward gradient", bp="backprop", interpolate=False):
    """One row per target: each method's best rate, its mean iterations to the target, the
    paired I_f / I_b (mean and 95% half-width), S_f / S_b, T_f / T_b and, in words, what a
    missing number means. interpolate: read each crossing between evaluations
    (iterations_to_targets), to see how much the evaluation grid moves the ratios."""
    s_ratio = checks.real("step_fg", step_fg, positive=True) / checks.real("step_bp", step_bp, positive=True)
    reach = iterations_to_targets(curves, targets, interpolate=interpolate)
    best = best_rates(reach).set_index(["target", "method"])["lr"]
    rows = []
    for target in reach["target"].unique():
        lr_f, lr_b = best.get((target, fg), math.nan), best.get((target, bp), math.nan)
        i_f = _runs(reach, target, fg, lr_f)
        i_b = _runs(reach, target, bp, lr_b)
        row = {"target": target, "best rate, forward gradient": lr_f, "best rate, backprop": lr_b,
               "I_f": np.nanmean(i_f) if len(i_f) else math.nan, "I_b": np.nanmean(i_b) if len(i_b) else math.nan,
               "I_f/I_b": math.nan, "±95%": math.nan, "S_f/S_b": s_ratio, "T_f/T_b": math.nan, "note": ""}
        edge = [name for name, m, lr in (("forward gradient", fg, lr_f), ("backprop", bp, lr_b))
                if np.isfinite(lr) and on_edge(finals, m, lr)]
        if not np.isfinite(lr_b):
            row["note"] = "backprop never reached it"
        elif not np.isfinite(lr_f):
            bound = iterations / row["I_b"]
            row["note"] = f"forward gradients did not reach it in {iterations:,} iterations: I_f/I_b > {_floor_text(bound)}"
        else:
            ratios = [f / max(b, 1) for f, b in zip(i_f, i_b)]
            row["I_f/I_b"], row["±95%"], _ = mean_ci(ratios)
            row["T_f/T_b"] = row["I_f/I_b"] * s_ratio
        if edge:
            row["note"] = "; ".join(filter(None, [row["note"], f"best rate at the grid's edge: {' and '.join(edge)}"]))
        rows.append(row)
    return pd.DataFrame(rows)


def with_bounds(table, iterations):
    """compare_at_best's tables (with a 'model' column) made for a narrow page: where forward
    gradients missed a target, I_f/I_b and T_f/T_b read as the bounds the run implies ('> 67',
    rounded down as the note rounds them) instead of a blank explained in a long note; the other
    ratios to three significant figures. `iterations`: each model's run length."""
    out = table.copy()
    missed = out["T_f/T_b"].isna() & out["I_b"].notna()
    bound = out["model"].map(iterations) / out["I_b"]
    for col, limit in (("I_f/I_b", bound), ("T_f/T_b", bound * out["S_f/S_b"])):
        out[col] = [f"> {_floor_text(b)}" if m else (significant(v) if v == v else v)
                    for m, b, v in zip(missed, limit, out[col])]
    return out


def best_final_rates(finals):
    """Per method, the rate whose runs all ran and reached the lowest mean final validation
    loss, and whether it sits at the grid's edge."""
    rows = []
    for method, d in finals.groupby("method", sort=False):
        ran = d[d["status"] == RAN].groupby("lr")["validation_loss"].mean()
        lr = float(ran.idxmin())
        rows.append({"method": method, "lr": lr, "at the grid's edge": "yes" if on_edge(finals, method, lr) else "no"})
    return pd.DataFrame(rows)


def rates_tried(finals):
    """{method: 'the rates it ran, in order, each divergent or skipped one marked'}."""
    mark = {RAN: "", DIVERGED: " (diverged)", SKIPPED: " (skipped)"}
    return {method: ", ".join(f"{rate_text(lr)}{mark[s]}" for lr, s in d.groupby("lr")["status"].first().items())
            for method, d in finals.groupby("method", sort=False)}


def at_best_rates(curves, finals, best, step_ms, target_loss, iterations, reference="backprop", column="loss"):
    """One row per method at its best rate (from best_final_rates): test error (%, mean ± sd),
    iterations to the validation-loss target (mean over runs, all of which must reach it), the
    step time S (step_ms: {method: median ms per step}) and T = I x S against `reference`'s,
    decomposed as (I / I_ref) x (S / S_ref). Where not every run reached the target, 'I at least'
    bounds the mean from below, counting each run that missed as reaching it at `iterations`
    (with_reach_bounds shows it). column='accuracy' makes target_loss a validation accuracy to
    reach instead."""
    reach = iterations_to_targets(curves, {column: [target_loss]})
    rows = []
    for _, b in best.iterrows():
        f = finals[(finals["method"] == b["method"]) & (finals["lr"] == b["lr"]) & (finals["status"] == RAN)]
        its = reach[(reach["method"] == b["method"]) & (reach["lr"] == b["lr"])].sort_values("run")["iterations"]
        mean, half, n = mean_ci(its.tolist())
        error = 100 * (1 - f["test_accuracy"])
        rows.append({"method": b["method"], "best rate": b["lr"], "test error (%)": error.mean(),
                     "± sd": error.std(), "runs": len(f), "reached": f"{n}/{len(its)}",
                     "I (iterations)": mean if n == len(its) else math.nan, "S (ms)": step_ms[b["method"]],
                     # a run that missed the target would have needed more than the whole run
                     "I at least": its.fillna(iterations).mean() if n < len(its) else math.nan})
    table = pd.DataFrame(rows).set_index("method")
    ref = table.loc[reference]
    table[f"I / I_{reference}"] = table["I (iterations)"] / ref["I (iterations)"]
    table[f"S / S_{reference}"] = table["S (ms)"] / ref["S (ms)"]
    table[f"T / T_{reference}"] = table[f"I / I_{reference}"] * table[f"S / S_{reference}"]
    return table.reset_index()


def with_reach_bounds(table, reference="backprop"):
    """at_best_rates' table made for reading: where not every run reached the target, I, I / I_ref
    and T / T_ref read as the lower bounds 'I at least' implies ('> 43', rounded down), the other
    values of those columns to three significant figures; the bound column itself goes."""
    out = table.drop(columns="I at least")
    bound = table["I at least"]
    ref = table.loc[table["method"] == reference, "I (iterations)"]
    i_ref = float(ref.iloc[0]) if len(ref) else math.nan
    limits = {"I (iterations)": bound, f"I / I_{reference}": bound / i_ref,
              f"T / T_{reference}": bound / i_ref * table[f"S / S_{reference}"]}
    for col, limit in limits.items():
        value = (lambda v: f"{v:,.0f}" if v == v else significant(v)) if col == "I (iterations)" else significant
        out[col] = [f"> {_floor_text(b)}" if b == b else value(v) for b, v in zip(limit, table[col])]
    return out


def _runs(reach, target, method, lr):
    """Iterations to `target` of each run (ordered by run) of `method` at `lr`."""
    if not np.isfinite(lr):
        return []
    d = reach[(reach["target"] == target) & (reach["method"] == method) & (reach["lr"] == lr)]
    return d.sort_values("run")["iterations"].tolist()


def save_sweep(folder, model_name, curves, finals, device="cpu"):
    """A model's sweep saved raw: every run's curve at every evaluation, and every (method, rate,
    run)'s final numbers and status, as raw/lr_sweep/<model>-curves.csv.gz and -finals.csv."""
    from .runs import save_table
    save_table(folder, "lr_sweep", f"{model_name}-curves.csv.gz", curves, device)
    save_table(folder, "lr_sweep", f"{model_name}-finals.csv", finals, device)


def load_sweep(folder, model_name):
    """(curves, finals) as save_sweep saved them (both empty if nothing was)."""
    from .runs import load_table
    read = lambda name: load_table(folder, "lr_sweep", name).drop(columns=["device", "torch", "threads"],
                                                                   errors="ignore")
    return read(f"{model_name}-curves.csv.gz"), read(f"{model_name}-finals.csv")
