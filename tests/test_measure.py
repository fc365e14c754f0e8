"""The measurement helpers on small cases."""
import math
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import fglib
from fglib.registry import LABELS


def validation_rows(fg_losses, bp_losses, dt_fg=1.0, dt_bp=2.0):
    rows = []
    for name, losses, dt in (("forward gradient", fg_losses, dt_fg), ("backprop", bp_losses, dt_bp)):
        for run, shift in ((0, -0.01), (1, 0.01)):
            rows += [{"method": name, "run": run, "iteration": i, "time": i * dt, "loss": l + shift}
                     for i, l in enumerate(losses)]
    return pd.DataFrame(rows)


def test_time_to_target_when_reached():
    out = fglib.time_to_target(validation_rows([3, 2, 1.0, 0.9], [3, 1.5, 1.0, 1.2]))
    assert out["target_loss"] == pytest.approx(1.0)
    assert out["T_b"] == 4.0 and out["T_f"] == 2.0 and out["T_f/T_b"] == 0.5 and out["reached"]


def test_time_to_target_never_reached():
    out = fglib.time_to_target(validation_rows([3, 2.5, 2.0, 1.9], [3, 1.5, 1.0, 1.2]))
    assert not out["reached"] and math.isnan(out["T_f"]) and math.isnan(out["T_f/T_b"])
    assert fglib.describe_ratio(out["T_f/T_b"]) == "never within the run"


def test_runtime_ratios_share_one_base():
    model = fglib.build_model("logreg", seed=0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    methods = {m: fglib.make_method(m, model, F.cross_entropy, 1e-6) for m in ("fg", "bp")}
    out = fglib.runtime_ratios(model, methods, F.cross_entropy, x, y, warmup=1, repeats=5)
    assert out["base"] > 0 and out["fg"] > 0 and out["bp"] > 0
    assert out["R_fg"] == out["fg"] / out["base"] and out["R_bp"] == out["bp"] / out["base"]


def test_forward_gradient_stores_no_activations():
    model = fglib.build_model("mlp", seed=0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    fg, bp = (fglib.make_method(m, model, F.cross_entropy, 1e-6) for m in ("fg", "bp"))
    assert fglib.saved_bytes(lambda: fg.step(x, y)) == 0
    small = fglib.saved_bytes(lambda: bp.step(x[:8], y[:8]))
    large = fglib.saved_bytes(lambda: bp.step(x, y))
    assert large > small > 0  # backprop's tape grows with the batch


def test_peak_memory_is_nan_on_cpu():
    assert math.isnan(fglib.peak_memory(lambda: None, "cpu"))


def test_bad_repeats_refused():
    with pytest.raises(ValueError, match="repeats"):
        fglib.median_times({"a": lambda: None}, "cpu", repeats=0)


def test_sweep_stops_at_the_first_divergent_rate(mnist):
    """Rates run in increasing order; the first divergent one is recorded and those above it
    are skipped, not run."""
    from fglib.book.sweep import DIVERGED, SKIPPED, lr_sweep
    curves, finals = lr_sweep("logreg", mnist, {"fg": [1e38, 1e-3, 1e39], "bp": [1e-1]},
                              runs=1, iterations=40, eval_points=5)
    status = finals.set_index(["method", "lr"])["status"]
    assert status[("forward gradient", 1e38)] == DIVERGED and status[("forward gradient", 1e39)] == SKIPPED
    assert set(curves.lr) == {1e-3, 1e-1}
    curves, finals = lr_sweep("logreg", mnist, {"fg": [1e38]}, runs=1, iterations=5, eval_points=2)
    assert curves.empty and list(finals["status"]) == [DIVERGED]   # a grid widened only into divergence


def test_a_grid_widened_in_a_second_sitting_gives_the_one_sitting_sweep(mnist):
    """rates_to_run + extend_sweep: the new rates only, and the same tables as a sweep of the
    whole grid at once (runs are seeded, so rates are independent); nothing at or above a saved
    divergent rate is run again."""
    from fglib.book.sweep import extend_sweep, lr_sweep, rates_to_run
    kw = dict(runs=1, iterations=20, eval_points=4)
    whole = lr_sweep("logreg", mnist, {"fg": [1e-4, 1e-3], "bp": [1e-2, 1e-1]}, **kw)
    first = lr_sweep("logreg", mnist, {"fg": [1e-4], "bp": [1e-2]}, **kw)
    todo = rates_to_run(first[1], {"fg": [1e-4, 1e-3], "bp": [1e-2, 1e-1]}, label=LABELS.get)
    assert todo == {"fg": [1e-3], "bp": [1e-1]}
    curves, finals = extend_sweep(first, lr_sweep("logreg", mnist, todo, **kw))
    expected_curves, expected_finals = extend_sweep(whole, (whole[0].iloc[:0], whole[1].iloc[:0]))
    pd.testing.assert_frame_equal(finals, expected_finals)
    pd.testing.assert_frame_equal(curves.drop(columns="time"), expected_curves.drop(columns="time"))
    diverged = pd.DataFrame([{"method": "forward gradient", "lr": 1e-2, "run": -1, "status": "diverged"}])
    assert rates_to_run(diverged, {"fg": [1e-3, 1e-2, 1e-1]}, label=LABELS.get) == {"fg": [1e-3]}


def test_a_sweep_given_more_runs_later_gives_the_sweep_run_with_them_all(mnist):
    """runs_to_add + add_runs: a sweep saved with 1 run per rate, given 2 later, runs only the
    second run at each rate that ran (seed + 1, renumbered run 1), and the tables equal a 2-run
    sweep's; a divergent rate is not run again; the control, a sweep already at 2 runs, adds none."""
    from fglib.book.sweep import DIVERGED, add_runs, extend_sweep, lr_sweep, runs_to_add
    kw = dict(iterations=20, eval_points=4)
    grid = {"fg": [1e-4, 1e-3], "bp": [1e-2]}
    whole = lr_sweep("logreg", mnist, grid, runs=2, **kw)
    first = lr_sweep("logreg", mnist, grid, runs=1, **kw)
    todo = runs_to_add(first[1], grid, 2, label=LABELS.get)
    assert todo == {"fg": (1, [1e-4, 1e-3]), "bp": (1, [1e-2])}
    fresh = add_runs(lambda key, rates, n: lr_sweep("logreg", mnist, {key: rates}, runs=2 - n, seed=n, **kw), todo)
    curves, finals = extend_sweep(first, fresh)
    expected_curves, expected_finals = extend_sweep(whole, (whole[0].iloc[:0], whole[1].iloc[:0]))
    pd.testing.assert_frame_equal(finals, expected_finals)
    pd.testing.assert_frame_equal(curves.drop(columns="time"), expected_curves.drop(columns="time"))
    assert runs_to_add(whole[1], grid, 2, label=LABELS.get) == {}   # the control: nothing missing
    diverged = pd.DataFrame([{"method": "forward gradient", "lr": 1e-2, "run": -1, "status": DIVERGED}])
    assert runs_to_add(diverged, {"fg": [1e-2]}, 3, label=LABELS.get) == {}


def test_a_saved_sweep_runs_only_its_missing_rates_and_keeps_each_rows_device(tmp_path):
    """complete_sweep: a second sitting with a wider grid calls the sweep for the new rates only;
    rows from the first sitting keep the device they were measured on; remeasure runs everything."""
    from fglib.book.runs import load_table, raw_folder
    from fglib.book.sweep import complete_sweep
    calls = []

    def fake(todo):   # one run per rate, its loss the rate itself
        calls.append(todo)
        rows = [(LABELS[m], lr) for m, rates in todo.items() for lr in rates]
        curves = pd.DataFrame([{"method": m, "lr": lr, "run": 0, "iteration": 0, "split": "validation", "loss": lr}
                               for m, lr in rows])
        finals = pd.DataFrame([{"method": m, "lr": lr, "run": 0, "status": "ran", "validation_loss": lr}
                               for m, lr in rows])
        return curves, finals
    complete_sweep(tmp_path, "mlp", {"fg": [1e-4]}, fake)
    path = raw_folder(tmp_path, "lr_sweep") / "mlp-finals.csv"
    pd.read_csv(path).assign(device="an earlier device").to_csv(path, index=False)
    curves, finals = complete_sweep(tmp_path, "mlp", {"fg": [1e-4, 1e-3]}, fake)
    assert calls == [{"fg": [1e-4]}, {"fg": [1e-3]}] and list(finals["lr"]) == [1e-4, 1e-3]
    devices = load_table(tmp_path, "lr_sweep", "mlp-finals.csv").set_index("lr")["device"]
    assert devices[1e-4] == "an earlier device" and devices[1e-3] != "an earlier device"
    complete_sweep(tmp_path, "mlp", {"fg": [1e-4, 1e-3]}, fake)   # nothing missing: no call
    complete_sweep(tmp_path, "mlp", {"fg": [1e-4, 1e-3]}, fake, remeasure=True)
    assert calls[2:] == [{"fg": [1e-4, 1e-3]}]


def sweep_curves(hits):
    """Fabricated validation curves: hits[(method, lr)] = iteration at which each run's loss
    drops from 2.0 to 0.3 (None: never)."""
    rows = []
    for (method, lr), per_run in hits.items():
        for run, hit in enumerate(per_run):
            for i in (0, 10, 20, 50, 100, 200, 500, 1000):
                low = hit is not None and i >= hit
                rows.append({"method": method, "lr": lr, "run": run, "split": "validation", "iteration": i,
                             "loss": 0.3 if low else 2.0, "accuracy": 0.95 if low else 0.5})
    return pd.DataFrame(rows)


def sweep_finals(hits, diverged=()):
    rows = [{"method": m, "lr": lr, "run": 0, "status": "ran"} for m, lr in hits]
    return pd.DataFrame(rows + [{"method": m, "lr": lr, "run": -1, "status": "diverged"} for m, lr in diverged])


def test_sweep_compares_each_method_at_its_own_best_rate_pair_by_pair():
    from fglib.book.sweep import compare_at_best
    hits = {("forward gradient", 1e-4): [500, 1000, None], ("forward gradient", 1e-3): [200, 200, 500],
            ("backprop", 0.01): [200, 200, 200], ("backprop", 0.1): [50, 100, 50]}
    table = compare_at_best(sweep_curves(hits), sweep_finals(hits, [("backprop", 1.0)]), {"loss": [0.5]},
                            step_fg=2.0, step_bp=1.0, iterations=1000)
    row = table.iloc[0]
    assert row["best rate, forward gradient"] == 1e-3 and row["best rate, backprop"] == 0.1
    assert row["I_f/I_b"] == pytest.approx((4 + 2 + 10) / 3) and row["T_f/T_b"] == pytest.approx(2 * 16 / 3)
    assert "forward gradient" in row["note"] and "backprop" not in row["note"]  # 1e-3 is fg's top, no divergence


def test_a_tie_for_best_rate_goes_to_the_lower_rate_and_a_faster_rate_wins_outright():
    from fglib.book.sweep import best_rates, iterations_to_targets
    tie = {("backprop", 0.1): [200, 200], ("backprop", 0.01): [200, 200]}
    reach = iterations_to_targets(sweep_curves(tie), {"loss": [0.5]})
    assert best_rates(reach)["lr"].tolist() == [0.01]
    faster = {("backprop", 0.1): [100, 100], ("backprop", 0.01): [200, 200]}   # control: no tie
    assert best_rates(iterations_to_targets(sweep_curves(faster), {"loss": [0.5]}))["lr"].tolist() == [0.1]


def test_reading_crossings_between_evaluations_moves_the_sweeps_ratio_within_one_gap():
    """A run whose loss falls linearly between evaluations: read at evaluations, I is the
    evaluation after the crossing; interpolated, the crossing itself."""
    from fglib.book.sweep import compare_at_best
    rows = []
    for method, lr, fall in (("forward gradient", 1e-3, 400), ("backprop", 0.1, 40)):
        for i in (0, 10, 20, 50, 100, 200, 500, 1000):
            rows.append({"method": method, "lr": lr, "run": 0, "split": "validation", "iteration": i,
                         "loss": max(0.0, 1.0 - i / fall), "accuracy": 0.5})
    curves = pd.DataFrame(rows)
    finals = sweep_finals({("forward gradient", 1e-3): 0, ("backprop", 0.1): 0}, [("forward gradient", 1e-2), ("backprop", 1.0)])
    at_evals = compare_at_best(curves, finals, {"loss": [0.5]}, 1.0, 1.0, iterations=1000).iloc[0]
    between = compare_at_best(curves, finals, {"loss": [0.5]}, 1.0, 1.0, iterations=1000, interpolate=True).iloc[0]
    assert (at_evals["I_f"], at_evals["I_b"]) == (200, 20)      # crossings at 200 and 20 fall on evaluations
    assert between["I_f"] == pytest.approx(200) and between["I_b"] == pytest.approx(20)
    late = curves.assign(loss=lambda d: [max(0.0, 1.0 - i / (500 if m == "forward gradient" else 60))
                                         for m, i in zip(d["method"], d["iteration"])])   # control: off the grid
    assert compare_at_best(late, finals, {"loss": [0.5]}, 1.0, 1.0, iterations=1000).iloc[0]["I_f/I_b"] == pytest.approx(500 / 50)
    assert compare_at_best(late, finals, {"loss": [0.5]}, 1.0, 1.0, iterations=1000,
                           interpolate=True).iloc[0]["I_f/I_b"] == pytest.approx(250 / 30)


def test_sweep_gives_no_ratio_when_forward_gradients_never_reach_the_target():
    from fglib.book.sweep import compare_at_best
    hits = {("forward gradient", 1e-4): [None, None], ("backprop", 0.1): [50, 50]}
    table = compare_at_best(sweep_curves(hits), sweep_finals(hits), {"accuracy": [0.9]}, 1.0, 1.0, iterations=1000)
    row = table.iloc[0]
    assert row["target"] == "validation accuracy ≥ 90%" and math.isnan(row["T_f/T_b"])
    assert "I_f/I_b > 20" in row["note"]


def test_each_method_at_its_best_final_rate_decomposes_time_to_target():
    """best_final_rates picks the lowest final validation loss; at_best_rates gives I (only when
    every run reached the target), S and T = I x S against the reference, and test error."""
    from fglib.book.sweep import at_best_rates, best_final_rates
    hits = {("FG-A", 1e-3): [500, 1000], ("FG-A", 1e-2): [200, 200], ("FG-W", 1e-4): [None, 500],
            ("backprop", 0.1): [50, 50]}
    curves = sweep_curves(hits)
    finals = pd.DataFrame([{"method": m, "lr": lr, "run": r, "status": "ran", "test_accuracy": 0.9,
                            "validation_loss": {1e-3: 0.5, 1e-2: 0.3}.get(lr, 0.4)}
                           for (m, lr), runs in hits.items() for r in range(len(runs))])
    best = best_final_rates(finals)
    assert best.set_index("method")["lr"]["FG-A"] == 1e-2
    table = at_best_rates(curves, finals, best, {"FG-A": 3.0, "FG-W": 2.0, "backprop": 1.5}, 0.5, 1000).set_index("method")
    assert table.loc["FG-A", "I / I_backprop"] == 4 and table.loc["FG-A", "S / S_backprop"] == 2
    assert table.loc["FG-A", "T / T_backprop"] == 8 and table.loc["FG-A", "test error (%)"] == pytest.approx(10)
    assert math.isnan(table.loc["FG-W", "I (iterations)"]) and table.loc["FG-W", "reached"] == "1/2"
    assert table.loc["FG-W", "I at least"] == (500 + 1000) / 2 and math.isnan(table.loc["FG-A", "I at least"])


def test_a_target_some_runs_missed_reads_as_a_lower_bound_with_its_footnote():
    """with_reach_bounds: FG-W's one run that missed counts as reaching the target at the run's end,
    so its mean I is at least 750 and I / I_backprop at least 15; the footnote explains '>' only
    where a bound is shown (control: every run reached, no '>' and no note)."""
    from fglib.book.sweep import at_best_rates, best_final_rates, with_reach_bounds
    from fglib.book.tables import reach_note, show
    hits = {("FG-W", 1e-4): [None, 500], ("backprop", 0.1): [50, 50]}
    finals = pd.DataFrame([{"method": m, "lr": lr, "run": r, "status": "ran", "test_accuracy": 0.9, "validation_loss": 0.4}
                           for (m, lr), runs in hits.items() for r in range(len(runs))])
    table = at_best_rates(sweep_curves(hits), finals, best_final_rates(finals), {"FG-W": 2.0, "backprop": 1.0}, 0.5, 1000)
    shown = with_reach_bounds(table).set_index("method")
    assert "I at least" not in shown
    assert (shown.loc["FG-W", "I (iterations)"], shown.loc["FG-W", "I / I_backprop"], shown.loc["FG-W", "T / T_backprop"]) == \
        ("> 750", "> 15", "> 30")
    assert shown.loc["backprop", "I (iterations)"] == "50" and shown.loc["backprop", "T / T_backprop"] == "1.00"
    text = show(shown.reset_index(), note=reach_note(table, 1000)).data
    assert text.split(":::")[0].rstrip().endswith("\\> x: not every run reached the target within 1,000 iterations; counting "
                                                  "those runs as reaching it at the end gives this lower bound")
    reached = {("FG-W", 1e-4): [100, 500], ("backprop", 0.1): [50, 50]}   # control
    table = at_best_rates(sweep_curves(reached), finals, best_final_rates(finals), {"FG-W": 2.0, "backprop": 1.0}, 0.5, 1000)
    text = show(with_reach_bounds(table), note=reach_note(table, 1000)).data
    assert ">" not in text.replace("&gt;", "") and "lower bound" not in text


def test_optimiser_settings_are_checked_by_name():
    from fglib.book.optimisers import check_settings
    assert check_settings("s", {"fg": {"adam": [1e-4]}}) == {"fg": {"adam": [1e-4]}}
    with pytest.raises(ValueError, match="optimizer|adamw"):
        check_settings("s", {"fg": {"adamw": [1e-4]}})
    with pytest.raises(TypeError, match=r"s\['fg'\]"):
        check_settings("s", {"fg": [1e-4]})


class Stop(Exception):
    pass


def test_an_optimiser_sweep_stopped_part_way_resumes_to_the_uninterrupted_result(mnist):
    """optimiser_sweep and carry_sweep save after each pairing; a sweep stopped after its first
    save and started again from what was saved runs only the rest, and ends with the tables of a
    sweep that never stopped (runs are seeded); nothing saved is run twice."""
    from fglib.book import optimisers as opt
    settings = {"fg": {"sgd": [1e-4]}, "bp": {"sgd": [0.1], "adam": [1e-3]}}
    kw = dict(runs=1, iterations=12, eval_points=3, eval_examples=200)
    datasets = {"mnist": mnist, "again": mnist}
    for sweep, first in ((lambda **k: opt.optimiser_sweep("logreg", mnist, settings, **kw, **k), 1),
                         (lambda **k: opt.carry_sweep("logreg", datasets, settings, **kw, **k), 3)):
        whole = sweep()
        saves = []

        def stop_after(c, f, n=first):
            saves.append((c, f))
            if len(saves) == n:
                raise Stop
        with pytest.raises(Stop):
            sweep(save=stop_after)
        ran = []
        resumed = sweep(saved=saves[-1], save=lambda c, f: ran.append(set(f["method"]) - set(saves[-1][1]["method"])))
        assert len(ran) == 3 * len(datasets if first == 3 else [0]) - first
        for got, expected in zip(resumed, whole):
            pd.testing.assert_frame_equal(got.drop(columns="time", errors="ignore"),
                                          expected.drop(columns="time", errors="ignore"))


def test_saved_bytes_counts_the_activations_not_the_weights():
    """Backprop through the MLP keeps the input and the two hidden ReLU outputs (plus the small
    softmax output and labels); the 7 MB of weights it also references are not counted."""
    model = fglib.build_model("mlp", seed=0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    bp = fglib.make_method("bp", model, F.cross_entropy, 1e-6)
    counted = fglib.saved_bytes(lambda: bp.step(x, y), exclude=list(model.parameters()))
    activations = 64 * (784 + 1024 + 1024) * 4
    assert activations <= counted <= activations + 10_000


def k_finals(hits, losses):
    """Finals for fabricated K runs: hits keyed (label, lr) as in sweep_curves, K from the label."""
    from fglib.book.variance import k_label
    ks = {k_label(k): k for k in (1, 4, 16)}
    return pd.DataFrame([{"method": m, "lr": lr, "run": r, "status": "ran", "test_accuracy": 0.9,
                          "validation_loss": losses[(m, lr)], "K": ks.get(m, math.nan)}
                         for (m, lr), runs in hits.items() for r in range(len(runs))])


def test_k_directions_pay_only_when_the_whole_interval_of_the_time_ratio_is_below_one():
    """T(K)/T(1) = [K I(K) / I(1)] x [S(K) / (K S(1))], pair by pair: K = 4 needs a tenth of
    K = 1's iterations in both pairs (0.4 of its directions) and its step costs half of 4 steps,
    so T(4)/T(1) = 0.2 with no spread: pays; K = 16 needs the same iterations as K = 1 at equal
    step cost per direction: 16 times the time, does not pay."""
    from fglib.book.grading import k_label, k_pays
    from fglib.book.variance import k_table
    hits = {(k_label(1), 1e-4): [200, 500], (k_label(1), 1e-3): [100, 200],
            (k_label(4), 1e-3): [10, 20], (k_label(16), 1e-2): [100, 200], ("backprop", 0.1): [10, 20]}
    losses = {(k_label(1), 1e-4): 0.5, (k_label(1), 1e-3): 0.4, (k_label(4), 1e-3): 0.3,
              (k_label(16), 1e-2): 0.3, ("backprop", 0.1): 0.1}
    curves, finals = sweep_curves(hits), k_finals(hits, losses)
    ms = {k_label(1): 2.0, k_label(4): 4.0, k_label(16): 32.0, "backprop": 1.0}
    pays = k_pays(curves, finals, ms, 0.5, budget=1000).set_index("K")
    assert pays.loc[4, "directions / those of K = 1"] == pytest.approx(0.4) and pays.loc[4, "±95%"] == 0
    assert pays.loc[4, "engine factor"] == pytest.approx(0.5) and pays.loc[4, "T / T(K = 1)"] == pytest.approx(0.2)
    assert pays.loc[4, "verdict"] == "pays for itself"
    assert pays.loc[16, "T / T(K = 1)"] == pytest.approx(16.0) and pays.loc[16, "verdict"] == "does not pay"
    table = k_table(curves, finals, ms, 0.5, 1000).set_index("method")
    assert table.loc[k_label(16), "T / T_backprop"] == pytest.approx(150 * 32 / 15)
    assert table.loc[k_label(1), "best rate"] == 1e-3 and table.loc["backprop", "K"] != table.loc["backprop", "K"]


def test_k_directions_bound_the_ratio_when_a_run_misses_its_budget():
    """Every run draws the same budget of directions (1,000), so a K = 1 run that missed the
    target bounds the ratio from above (it needed more than 1,000 directions), a K = 4 run that
    missed bounds it from below; both missing in one pair, or bounds both ways, is not judged."""
    from fglib.book.grading import k_label, k_pays

    def pays(h1, h4, ms4=4.0):
        hits = {(k_label(1), 1e-3): h1, (k_label(4), 1e-3): h4, ("backprop", 0.1): [10, 10]}
        finals = k_finals(hits, {key: 0.4 for key in hits})
        return k_pays(sweep_curves(hits), finals, {k_label(1): 1.0, k_label(4): ms4, "backprop": 1.0}, 0.5,
                      budget=1000).iloc[0]

    upper = pays([None, None], [50, 50])  # 4 x 50 / 1000 = 0.2 at most, in both pairs
    assert upper["bound"] == "<" and upper["directions / those of K = 1"] == pytest.approx(0.2)
    assert upper["verdict"] == "pays for itself"
    lower = pays([100, 100], [None, None])  # K = 4 needed more than 1000 / 100 = 10 times the directions
    assert lower["bound"] == ">" and lower["directions / those of K = 1"] == pytest.approx(10)
    assert lower["verdict"] == "does not pay"
    assert pays([100, 100], [None, None], ms4=0.01)["verdict"] == "cannot tell"  # a lower bound cannot show it pays
    mixed = pays([100, None], [20, 20])  # 0.8 exactly and at most 0.08: an upper bound, wide
    assert mixed["bound"] == "<" and mixed["verdict"] == "cannot tell"
    assert pays([None, 100], [None, 20])["verdict"].startswith("not judged: both")
    assert pays([None, 100], [20, None])["verdict"].startswith("not judged: the runs that missed")


def test_k_sweep_refuses_a_budget_below_the_largest_k_and_bad_grids(mnist):
    from fglib.book.variance import check_k_rates, k_sweep
    with pytest.raises(ValueError, match="budget"):
        k_sweep("logreg", mnist, {1: [1e-3], 16: [1e-3]}, [0.1], budget=8, runs=1, eval_points=2)
    with pytest.raises(ValueError, match=r"k_rates key"):
        check_k_rates("k_rates", {0: [1e-3]})
    with pytest.raises(TypeError, match="k_rates"):
        check_k_rates("k_rates", [1e-3])
    assert list(check_k_rates("k_rates", {4: [1e-3], 1: [1e-4]})) == [1, 4]


def test_k_directions_cannot_tell_when_the_interval_straddles_one():
    """Pairs that disagree (K = 4 takes 0.4 and then 1.6 of K = 1's directions, at equal cost
    per direction) give an interval around 1: no verdict either way."""
    from fglib.book.grading import k_label, k_pays
    hits = {(k_label(1), 1e-3): [100, 50], (k_label(4), 1e-3): [10, 20], ("backprop", 0.1): [10, 10]}
    losses = {key: 0.4 for key in hits}
    pays = k_pays(sweep_curves(hits), k_finals(hits, losses), {k_label(1): 1.0, k_label(4): 4.0, "backprop": 1.0}, 0.5,
                   budget=1000)
    row = pays.iloc[0]
    assert row["directions / those of K = 1"] == pytest.approx(1.0) and row["verdict"] == "cannot tell"


def test_checkpointed_backprop_gives_backprops_gradient_with_less_memory():
    """Same weights after a step (float64, exact up to rounding) as plain backprop on a deep, narrow
    MLP at a large batch (activations outweigh the weights),
    while the peak of the tensors the step creates is lower: only each segment's input is kept
    between the passes. The control, one segment, keeps everything and saves nothing."""
    import torch.nn.functional as F
    from fglib.measure import peak_tensor_bytes
    torch.manual_seed(0)
    x, y = torch.randn(2048, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (2048,))
    peaks, weights = {}, {}
    for name, kwargs in (("bp", {}), ("bp_ckpt", {}), ("one segment", {"segments": 1})):
        model = fglib.build_model("deep", seed=0, depth=16, width=128).double()
        method = fglib.make_method("bp" if name == "bp" else "bp_ckpt", model, F.cross_entropy, 0.1, **kwargs)
        method.step(x, y)
        peaks[name] = peak_tensor_bytes(lambda: method.step(x, y))
        weights[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(weights["bp"], weights["bp_ckpt"], rtol=0, atol=1e-12)
    assert peaks["bp_ckpt"] < 0.8 * peaks["bp"]
    assert peaks["one segment"] >= 0.95 * peaks["bp"]


def test_checkpointed_backprop_refuses_what_it_cannot_cut():
    import torch.nn.functional as F
    with pytest.raises(TypeError, match="needs an nn.Sequential"):
        fglib.make_method("bp_ckpt", fglib.functions.PointModel(lambda t: (t ** 2).sum(), (1.0, 2.0)), F.mse_loss, 0.1)
    with pytest.raises(ValueError, match="segments must be at most"):
        fglib.make_method("bp_ckpt", fglib.build_model("logreg"), F.cross_entropy, 0.1, segments=9)


def test_the_deep_sweeps_last_activations_are_subnormal_at_depth_100_only(mnist):
    """Under the default initialisation a 100-layer ReLU network without bias shrinks its
    activations below float32's smallest normal number (the cause of its slow CPU timings);
    at depth 8, the control, they stay normal."""
    from fglib.book.experiments import subnormal_check
    deep, shallow = subnormal_check(mnist, depth=100, repeats=1), subnormal_check(mnist, depth=8, repeats=1)
    tiny = deep["smallest normal float32"]
    assert 0 < deep["largest |activation|, last hidden layer"] < tiny
    assert shallow["largest |activation|, last hidden layer"] > 1e6 * tiny


def test_subnormals_are_flushed_to_zero_on_one_thread_inside_and_kept_outside():
    """subnormals_flushed: a product that underflows to a subnormal reads 0 inside (one thread),
    and the subnormal outside (the control); the thread count is restored. depth_rounds refuses
    to flush on a GPU, where subnormals cost nothing extra."""
    from fglib.book.experiments import depth_rounds, subnormals_flushed
    tiny = torch.tensor([1e-37]) * 1e-3   # 1e-40: subnormal in float32
    threads = torch.get_num_threads()
    with subnormals_flushed():
        assert torch.get_num_threads() == 1 and (torch.tensor([1e-37]) * 1e-3).item() == 0.0
    assert tiny.item() != 0.0 and (torch.tensor([1e-37]) * 1e-3).item() != 0.0
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="flush_subnormals"):
        depth_rounds({}, [100], flush_subnormals=True, device="cuda")


def test_rounds_timed_with_subnormals_flushed_say_so_on_every_row(mnist):
    from fglib.book.experiments import depth_rounds
    rounds = depth_rounds(mnist, [2], runs=1, repeats=2, warmup=1, width=16, progress=False, flush_subnormals=True,
                          forward_ad=False)
    assert set(rounds["device"]) == {fglib.device_name("cpu").rsplit(",", 1)[0] + ", 1 thread)"}
    assert set(rounds["subnormals"]) == {"flushed"} and set(rounds["name"]) == {"base", LABELS["fg"], LABELS["bp"]}
    kept = depth_rounds(mnist, [2], runs=1, repeats=2, warmup=1, width=16, progress=False)   # the control
    assert "subnormals" not in kept and "device" not in kept and len(set(kept["name"])) == 4



def test_peak_tensor_bytes_counts_nothing_for_a_zero_tensor_and_its_size_for_zeros():
    """Forward mode makes storage-less zero tensors as zero tangents (e.g. through
    fglib.RandomSubspace): they hold no memory and are not counted; real zeros are (control)."""
    from fglib.measure import peak_tensor_bytes
    assert peak_tensor_bytes(lambda: torch._efficientzerotensor(1000)) == 0
    assert peak_tensor_bytes(lambda: torch.zeros(1000)) == 4000
    sub = fglib.RandomSubspace(fglib.build_model("logreg", seed=0), 20, seed=1)
    step = fglib.make_method("fg", sub, F.cross_entropy, 1e-3)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    assert peak_tensor_bytes(lambda: step.step(x, y)) >= 7850 * 4   # theta_0 + P z, made at every step


def test_a_held_buffer_freed_during_the_step_stops_counting_when_freed():
    """The step frees last step's 4 MB gradient, then makes a new one of the same size: one
    gradient is alive at a time, so the peak is one buffer, not two. The control, the old measure
    (held before the step plus the step's own peak), says two."""
    from fglib.measure import peak_tensor_bytes, tensor_bytes
    p = torch.nn.Parameter(torch.zeros(1_000_000))
    p.grad = torch.ones(1_000_000)

    def step():
        p.grad = None
        p.grad = torch.ones(1_000_000)
    held = tensor_bytes([p.grad])
    assert peak_tensor_bytes(step, held=lambda: [p.grad]) == 4_000_000
    assert held + peak_tensor_bytes(step) == 8_000_000   # the control: counted twice
    keep = [p.grad]   # a buffer the step does not free counts throughout

    def step_keeping():
        p.grad = torch.ones(1_000_000)
    assert peak_tensor_bytes(step_keeping, held=lambda: keep) == 8_000_000


class _MallocInUse(torch.utils._python_dispatch.TorchDispatchMode):
    """An independent count: glibc's bytes in use (mallinfo2: arena and mmapped), read after
    every PyTorch operation; its peak over the step."""

    def __init__(self):
        super().__init__()
        import ctypes

        class Mallinfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                        "fsmblks", "uordblks", "fordblks", "keepcost")]
        self.libc = ctypes.CDLL("libc.so.6")
        self.libc.mallinfo2.restype = Mallinfo2
        self.start = self.peak = self.in_use()

    def in_use(self):
        info = self.libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self.in_use())
        return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's count")
@pytest.mark.parametrize("method_name", ["bp", "fg"])
def test_step_memory_agrees_with_the_allocators_own_count_on_the_mlp(method_name):
    """step_memory's total, less the weights, against glibc's peak bytes in use over the step, less
    those in use before it, plus the held buffers (in use before, and counted by step_memory): within
    2% on the MLP at batch 64, for both methods (backprop frees its old gradient, forward gradient
    keeps it). The control: the old measure, weights + held + step peak, is 50% over for backprop."""
    from fglib.measure import held_tensors, step_memory, tensor_bytes
    torch.manual_seed(0)
    model = fglib.build_model("mlp", seed=0)
    method = fglib.make_method(method_name, model, F.cross_entropy, 1e-9, seed=0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(10, (64,))
    method.step(x, y)
    measured = step_memory(model, lambda: method.step(x, y), method.optimizer)
    held = tensor_bytes(held_tensors(method.params, method.optimizer))
    counter = _MallocInUse()
    with counter:
        method.step(x, y)
    independent = counter.peak - counter.start + held
    ours = measured["total"] - measured["weights"]
    assert abs(ours / independent - 1) < 0.02, (ours, independent)
    old = measured["held"] + measured["step peak"]
    assert method_name == "fg" or old / independent - 1 > 0.4


def test_a_forward_gradient_step_frees_last_steps_gradient_before_it_draws_v():
    """The lean step (issue 55): the old .grad is freed before v is drawn, so at its peak the step
    holds the weights, v (which becomes the gradient in place) and the engine's working set, and
    no second weight-sized buffer: total <= weights + step peak. Same weights bit for bit as a
    step that keeps the old gradient until it is replaced (the control, whose total exceeds that
    bound by about one gradient)."""
    import torch.nn.functional as F
    import fglib
    from fglib import methods
    from fglib.measure import step_memory, tensor_bytes
    x, y = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 10

    def run(keep_old_gradient):
        model = fglib.build_model("mlp", seed=0)
        method = fglib.make_method("fg", model, F.cross_entropy, lr=1e-3, seed=0)   # plain SGD: no state held
        if keep_old_gradient:   # the former step: zero_grad left out
            method.optimizer.zero_grad = lambda set_to_none=True: None
        for _ in range(3):
            method.step(x, y)
        memory = step_memory(model, lambda: method.step(x, y), method.optimizer)
        return [p.detach().clone() for p in model.parameters()], memory, tensor_bytes(list(model.parameters()))
    lean, lean_memory, weights = run(False)
    kept, kept_memory, _ = run(True)
    assert all(torch.equal(a, b) for a, b in zip(lean, kept))
    assert lean_memory["total"] <= lean_memory["weights"] + lean_memory["step peak"]
    assert kept_memory["total"] >= lean_memory["total"] + 0.9 * weights   # the control held one more gradient


def test_a_rate_just_below_the_first_divergent_one_is_flagged_and_the_grids_top_is_not():
    """sweep.below_divergence: the highest rate that ran, with a diverged rate above it (a better
    rate may lie between, untried); the control: the same rate in a grid with no divergence, and a
    lower rate of the diverging grid, are not flagged."""
    from fglib.book.sweep import below_divergence
    hits = {("backprop", 0.01): [200], ("backprop", 0.1): [50]}
    assert below_divergence(sweep_finals(hits, [("backprop", 1.0)]), "backprop", 0.1)
    assert not below_divergence(sweep_finals(hits), "backprop", 0.1)
    assert not below_divergence(sweep_finals(hits, [("backprop", 1.0)]), "backprop", 0.01)
