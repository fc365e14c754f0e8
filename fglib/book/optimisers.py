"""The optimisers chapter: forward gradients and backprop with SGD (the paper's), momentum and
Adam, each pairing's learning rate tuned on its own grid; then the best settings on
Fashion-MNIST, to see whether the MNIST findings carry to a harder data set."""
import pandas as pd
import torch.nn.functional as F

from .. import checks
from ..measure import base_call
from ..methods import OPTIMIZERS
from ..registry import LABELS, make_method
from ..models import build_model
from ..timing import timed_rounds
from .local import model_for
from .sweep import at_best_rates, best_final_rates, extend_sweep, grid_edge, lr_sweep, rates_to_run

OPTIMIZER_LABELS = {"sgd": "SGD", "momentum": "momentum 0.9", "adam": "Adam"}


def label(method, optimizer):
    """'forward gradient, Adam'."""
    return f"{LABELS[method]}, {OPTIMIZER_LABELS[optimizer]}"


def check_settings(name, value):
    """{method: {optimizer: [rates]}}, e.g. {'fg': {'sgd': [1e-4, 3e-4], 'adam': [1e-5]}}."""
    if not isinstance(value, dict) or not value:
        raise TypeError(f"{name} must be a dict {{method: {{optimizer: [rates]}}}}, got {value!r}")
    out = {}
    for m, by_opt in value.items():
        checks.choice(f"{name} key", m, LABELS)
        if not isinstance(by_opt, dict) or not by_opt:
            raise TypeError(f"{name}[{m!r}] must be a dict {{optimizer: [rates]}}, got {by_opt!r}")
        out[m] = {checks.choice(f"{name}[{m!r}] key", o, OPTIMIZERS): checks.rates(f"{name}[{m!r}][{o!r}]", r)
                  for o, r in by_opt.items()}
    return out


def optimiser_sweep(base, data, settings, runs, iterations, eval_points, seed=0, device="cpu",
                    eval_examples=None, saved=None, save=None):
    """lr_sweep of every (method, optimiser) in settings ({method: {optimizer: [rates]}}), each
    on its own grid up to its first divergent rate, on `base` (a local method on its LocalNet);
    returns (curves, finals) labelled 'method, optimiser'. Resumable: `saved` (curves, finals)
    already measured are kept and only the rates they lack run (sweep.rates_to_run), and
    save(curves, finals) receives everything so far after each pairing, so that a sweep stopped
    part way loses at most the pairing it was in."""
    empty = pd.DataFrame()
    curves, finals = saved if saved is not None else (empty, empty)
    for m, by_opt in check_settings("settings", settings).items():
        for opt, rates in by_opt.items():
            name = label(m, opt)
            todo = rates_to_run(finals, {name: rates}).get(name, [])
            if not todo:
                continue
            c, f = lr_sweep(model_for(m, base), data, {m: todo}, runs, iterations, eval_points, seed, device,
                            eval_examples=eval_examples, optimizer=opt)
            fresh = c.assign(method=name, optimizer=opt), f.assign(method=name, optimizer=opt)
            curves, finals = extend_sweep((curves, finals), fresh)
            if save is not None:
                save(curves, finals)
    return curves, finals


def step_rounds(base, x, y, settings, seed=0, warmup=5, repeats=30, device="cpu"):
    """Every interleaved timing round (fglib.timing.timed_rounds) of one step of each (method,
    optimizer) pair in `settings`, and of inference, on fresh networks of the same seed: raw, for
    grading.cost_table."""
    net = build_model(base, seed=seed, device=device)
    calls = {"inference": base_call(net, F.cross_entropy, x, y)}
    for m, opt in settings:
        model = build_model(model_for(m, base), seed=seed, device=device)
        method = make_method(m, model, F.cross_entropy, 1e-9, seed=seed, optimizer=opt)
        calls[label(m, opt)] = lambda method=method: method.step(x, y)
    return timed_rounds(calls, device, warmup, repeats)


def step_times(base, x, y, settings, seed=0, warmup=5, repeats=30, device="cpu"):
    """{label: median ms per step} of step_rounds' rounds (grading.cost_table: quiet rounds only)."""
    from .grading import cost_table
    rounds = step_rounds(base, x, y, settings, seed, warmup, repeats, device)
    return cost_table(rounds, reference="inference").set_index("method")["step time (ms)"].to_dict()


def around(rate, factors=(1 / 3, 1, 3)):
    """A small grid around a rate found elsewhere: rate x each factor, rounded to 2 digits."""
    return [float(f"{rate * f:.2g}") for f in factors]


def best_settings(best, methods):
    """From best_final_rates' table of 'method, optimiser' rows: for each method (its label in
    LABELS), the optimiser and rate with the lowest final validation loss among the rows
    given, as {method: (optimizer, rate)}; `best` must carry a 'validation loss' column."""
    out = {}
    for m in methods:
        rows = best[best["method"].str.startswith(LABELS[m] + ", ")]
        row = rows.loc[rows["validation loss"].idxmin()]
        opt = next(o for o, lab in OPTIMIZER_LABELS.items() if row["method"] == label(m, o))
        out[m] = (opt, float(row["lr"]))
    return out


def with_final_loss(best, finals):
    """best_final_rates' table with each row's mean final validation loss at its rate."""
    loss = finals.groupby(["method", "lr"])["validation_loss"].mean()
    return best.assign(**{"validation loss": [loss[(m, lr)] for m, lr in zip(best["method"], best["lr"])]})


def carry_sweep(base, datasets, settings, runs, iterations, eval_points, seed=0, device="cpu",
                eval_examples=None, saved=None, save=None):
    """The same settings swept on each data set ({name: data}), the same seeds: raw (curves,
    finals), each with a `data` column. carry_results reads them. Resumable as optimiser_sweep
    is, data set by data set."""
    empty = pd.DataFrame()
    curves, finals = saved if saved is not None else (empty, empty)
    for name, data in datasets.items():
        mine = lambda t: t[t["data"] == name].drop(columns="data") if not t.empty else t
        others = lambda t: t[t["data"] != name] if not t.empty else t

        def save_all(c, f, name=name):
            nonlocal curves, finals
            curves, finals = extend_sweep((others(curves), others(finals)), (c.assign(data=name), f.assign(data=name)))
            if save is not None:
                save(curves, finals)
        optimiser_sweep(base, data, settings, runs, iterations, eval_points, seed, device, eval_examples,
                        saved=(mine(curves), mine(finals)), save=save_all)
    return curves, finals


def carry_results(curves, finals, iterations, target_loss=1.0):
    """One row per (data set, pairing) of carry_sweep's raw runs, at its best rate, with its test
    error (at_best_rates, no step times) and the edge of its grid that rate sits at, if any
    (sweep.grid_edge)."""
    rows = []
    for name in finals["data"].unique():
        c, f = curves[curves["data"] == name], finals[finals["data"] == name]
        best = best_final_rates(f)
        table = at_best_rates(c, f, best, {m: float("nan") for m in best.method}, target_loss, iterations,
                              reference=best.method.iloc[0])
        edge = {m: grid_edge(f, m, lr) for m, lr in zip(best["method"], best["lr"])}
        rows.append(table[["method", "best rate", "test error (%)", "± sd"]].assign(data=name, **{
            "grid edge": lambda t: t["method"].map(edge)}))
    return pd.concat(rows, ignore_index=True)


def carry_over(base, datasets, settings, runs, iterations, eval_points, seed=0, device="cpu", eval_examples=None,
               target_loss=1.0, reference=None):
    """carry_sweep, then carry_results: one row per (data set, pairing) at its best rate."""
    curves, finals = carry_sweep(base, datasets, settings, runs, iterations, eval_points, seed, device, eval_examples)
    return carry_results(curves, finals, iterations, target_loss)


DATA_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def carry_table(carry, methods):
    """carry: at_best_rates rows with a 'data' column. One row per method (in the order given):
    per data set its best rate and test error (mean ± sd, %); and {data: test error of each
    method minus the first method's}."""
    rows, gaps = [], {name: {} for name in carry["data"].unique()}
    for method in methods:
        row = {"method": method}
        for name in carry["data"].unique():
            r = carry[(carry["method"] == method) & (carry["data"] == name)].iloc[0]
            first = carry[(carry["method"] == methods[0]) & (carry["data"] == name)].iloc[0]
            sd = f" ± {r['± sd']:.1f}" if r["± sd"] == r["± sd"] else ""   # to the prose's one decimal
            row[f"{DATA_TITLES.get(name, name)}: best rate"] = r["best rate"]
            row[f"{DATA_TITLES.get(name, name)}: test error (%)"] = f"{r['test error (%)']:.1f}{sd}"
            gaps[name][method] = r["test error (%)"] - first["test error (%)"]
        rows.append(row)
    return pd.DataFrame(rows), gaps
