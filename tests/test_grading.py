"""Claim 4 graded from raw runs (fglib.book.grading), on fabricated runs whose answer is known,
each rule with a control that must come out the other way."""
import math

import numpy as np
import pandas as pd
import pytest

from fglib.book import grading

ITERATIONS = 10_000
GRID = sorted({*np.unique(np.round(np.logspace(0, 4, 40))).astype(int).tolist(), *range(0, 10_001, 50)})


def curve(final, rate, start=2.303):
    """An exponentially falling validation loss from `start` to `final` at `rate` per iteration."""
    return final + (start - final) * np.exp(-rate * np.array(GRID, dtype=float))


def runs(fg_rate=1e-3, bp_rate=2e-3, fg_final=0.3, bp_final=0.3, acc_fg=0.9, acc_bp=0.9, seeds=5):
    """Paired runs; seed s learns at rate x (1 + 0.05 (s - 2)), so that the runs differ."""
    rows = []
    for s in range(seeds):
        for method, rate, final, acc in ((grading.FG, fg_rate, fg_final, acc_fg), (grading.BP, bp_rate, bp_final, acc_bp)):
            loss = curve(final, rate * (1 + 0.05 * (s - 2)))
            for split, values in (("validation", loss), ("test", loss)):
                rows += [{"method": method, "seed": s, "run": s, "iteration": it, "split": split, "loss": v,
                          "accuracy": acc if it == GRID[-1] else 0.5} for it, v in zip(GRID, values)]
    return pd.DataFrame(rows)


def timings(fg=0.02, bp=0.01, repeats=30, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"name": m, "round": r, "seconds": t * (1 + 0.02 * rng.standard_normal())}
                         for r in range(repeats) for m, t in ((grading.FG, fg), (grading.BP, bp))])


def test_time_ratio_is_the_papers_mean_curve_rule():
    """Backprop falls twice as fast and its steps cost half: I_f/I_b ~ 2, S_f/S_b = 2, T ~ 4."""
    r = grading.time_ratio(runs(), 0.02, 0.01, tolerance=0.01)
    assert r["S_ratio"] == pytest.approx(2)
    assert r["I_ratio"] == pytest.approx(2, rel=0.1) and r["T_ratio"] == pytest.approx(4, rel=0.1)
    exact = grading.time_ratio(runs(), 0.02, 0.01, tolerance=0.0)
    assert exact["I_b"] == GRID[-1] and not math.isfinite(exact["I_f"])   # the lowest is reached only at the end


def test_the_interval_covers_the_estimate_and_excludes_1_when_it_should():
    """Forward gradient ends lower (0.28) and passes backprop's lowest at ~4,600 iterations against
    backprop's 10,000: I_f/I_b ~ 0.46. Steps 4 times as long: T ~ 1.9; steps as long: T ~ 0.46."""
    g = grading.grade_time_to_loss(runs(fg_final=0.28), timings(fg=0.04), ITERATIONS, decay=0, samples=300)
    assert g["verdict"] == "does not hold" and 1 < g["low"] <= g["T_ratio"] <= g["high"]
    assert g["I_ratio"] == pytest.approx(0.46, abs=0.05) and g["reason"] == grading.LEVELLED_OFF
    same = grading.grade_time_to_loss(runs(fg_final=0.28), timings(fg=0.01), ITERATIONS, decay=0, samples=300)
    assert same["verdict"] == "holds" and same["high"] < 1          # the control: equal step times


def test_a_cpu_that_fails_only_by_its_step_ratio_does_not_refute_the_claim():
    """Forward gradient needs fewer iterations (I_f/I_b ~ 0.46) but its steps cost 4 times as much:
    on a CPU the time claim is 'not reproduced on this CPU' (the device's factor decides), not
    refuted. Controls: the same runs timed on a GPU do not hold; on a CPU, a forward gradient that
    needs more iterations (I_f/I_b ~ 2) does not hold either."""
    def on(device, t):
        return t.assign(device=device)
    cpu = grading.grade_time_to_loss(runs(fg_final=0.28), on("CPU (test)", timings(fg=0.04)), ITERATIONS, decay=0,
                                     samples=100)
    assert cpu["verdict"] == grading.NOT_ON_CPU and cpu["step_decides"]
    gpu = grading.grade_time_to_loss(runs(fg_final=0.28), on("NVIDIA H100", timings(fg=0.04)), ITERATIONS, decay=0,
                                     samples=100)
    assert gpu["verdict"] == "does not hold" and not gpu["step_decides"]
    report = grading.claim4_report(runs(fg_final=0.28), on("CPU (test)", timings(fg=0.04)), ITERATIONS, decay=0,
                                   planned_pairs=5, samples=100)
    assert report["verdict"] == grading.NOT_ON_CPU and report["pairs"] == 5
    slower = grading.grade_time_to_loss(runs(), on("CPU (test)", timings()), ITERATIONS, decay=0, samples=100)
    assert slower["I_ratio"] > 1 and slower["verdict"] == "does not hold"


def test_the_tolerance_tables_first_row_is_the_grades_own_interval():
    """One number per quantity: the table's row at tolerance 0 and the grade are one bootstrap, so
    a page quoting either quotes the same interval and share of resamples reaching the level.
    Control: the table drawn with fewer resamples gives another share."""
    report = grading.claim4_report(runs(fg_final=0.28), timings(), ITERATIONS, decay=0, planned_pairs=5, samples=60)
    first = report["table"].iloc[0]
    assert first["tolerance"] == 0
    assert (first["95% low"], first["95% high"], first["resamples reaching"]) == (report["low"], report["high"], report["reached"])
    assert math.isfinite(report["low"])
    fewer = grading.tolerance_table(runs(fg_final=0.28), timings(), samples=7).iloc[0]
    assert (fewer["95% low"], fewer["95% high"]) != (report["low"], report["high"])


def test_tolerance_table_moves_with_the_tolerance():
    table = grading.tolerance_table(runs(), timings(), samples=100)
    assert table["tolerance"].tolist() == list(grading.TOLERANCES)
    assert (table["I_b"].diff().dropna() <= 0).all() and table["level"].is_monotonic_increasing


def test_learned_means_accuracy_above_chance_not_a_loss_level():
    """45% test accuracy has learned even with a loss near chance's; 10.5% has not."""
    slow = runs(bp_final=2.2, acc_bp=0.45)
    assert grading.learned(slow, grading.BP)[0]
    assert not grading.learned(runs(acc_bp=0.105), grading.BP)[0]
    g = grading.grade_time_to_loss(runs(acc_bp=0.105), timings(), ITERATIONS, decay=0, samples=50)
    assert g["verdict"] == "not judged" and g["reason"] == grading.NOT_LEARNED


def test_a_run_still_falling_is_not_judged_and_says_how_long_a_run_would_settle_it():
    still = runs(bp_rate=1e-4, fg_rate=5e-5)   # backprop's loss still falls 15% over the last fifth
    short = grading.grade_time_to_loss(still, timings(), ITERATIONS, decay=0, samples=50)
    assert short["verdict"] == "not judged" and short["reason"] == grading.STILL_FALLING
    assert "iterations_needed" not in short   # without a decay no run length settles it
    decaying = grading.grade_time_to_loss(still, timings(), ITERATIONS, decay=1e-3, samples=50)
    assert decaying["verdict"] == "not judged" and ITERATIONS < decaying["iterations_needed"] < 2 * ITERATIONS
    assert decaying["iterations_needed"] == grading._round_up(decaying["iterations_needed"])   # 2 figures
    bp_only = still[still["method"] == grading.BP]
    assert grading.run_length_needed(bp_only, ITERATIONS, 1e-3) == decaying["iterations_needed"]
    assert grading.run_length_needed(runs(), ITERATIONS, 1e-3) == ITERATIONS   # the control: it settled
    done = grading.grade_time_to_loss(runs(), timings(), ITERATIONS, decay=1e-3, samples=50)   # levelled, decay spent
    assert done["verdict"] != "not judged" and done["reason"] == grading.DECAY_SPENT
    control = grading.grade_time_to_loss(runs(), timings(), ITERATIONS, decay=1e-5, samples=50)
    assert control["reason"] == grading.LEVELLED_OFF


def test_a_run_the_decay_froze_is_graded_and_says_so():
    """Still falling 15% over the last fifth, but with k = 2e-3 the rest of the schedule is
    e^-20 / (e^-16 - e^-20) ~ 1.9% of that fifth's step: about 0.3% more fall, so it is compared;
    with k = 1e-3 (the control) about 2.5% more would come, so it is not."""
    still = runs(bp_rate=1e-4, fg_rate=2e-4, fg_final=0.2)
    frozen = grading.grade_time_to_loss(still, timings(fg=0.01), ITERATIONS, decay=2e-3, samples=50)
    assert frozen["verdict"] == "holds" and frozen["reason"] == grading.FROZEN_BY_DECAY
    assert frozen["fall_to_come"] == pytest.approx(frozen["bp_fall"] * math.exp(-20) / (math.exp(-16) - math.exp(-20)))
    assert grading.fall_still_to_come(0.15, ITERATIONS, 1e-3) > grading.LEVELLED


def test_the_extrapolation_matches_an_exactly_linear_descent_in_the_schedules_step():
    """A loss that falls at a constant rate per unit of step: L = 1 + c (1 - tau), tau the share
    of the step spent. Extrapolating from the last fifth gives the exact fall still to come."""
    k, n, c = 1e-4, 30_000, 0.5
    tau = lambda i: 1 - math.exp(-k * i)
    loss = lambda i: 1 + c * (1 - tau(i))
    fall = (loss(0.8 * n) - loss(n)) / loss(n)
    assert grading.fall_still_to_come(fall, n, k) * loss(n) == pytest.approx(loss(n) - loss(math.inf))
    needed = grading.iterations_to_freeze(fall, n, k)
    assert c * math.exp(-k * needed) / loss(n) == pytest.approx(grading.LEVELLED, rel=1e-3)


def test_never_reaching_the_level_is_said_plainly():
    g = grading.grade_time_to_loss(runs(fg_final=1.0), timings(), ITERATIONS, decay=0, samples=50)
    assert g["verdict"] == "does not hold" and math.isinf(g["T_ratio"]) and not math.isfinite(g["I_f"])


def test_partial_evidence_is_not_judged_and_says_what_is_missing():
    full = runs()
    only_bp = full[(full.method == grading.BP) & (full.seed == 0)]
    r = grading.claim4_report(only_bp, timings(), ITERATIONS, 0, planned_pairs=5, samples=50)
    assert r["verdict"] == "not judged" and r["reason"] == grading.RUNS_MISSING
    assert (r["pairs"], r["planned_pairs"], r["single_runs"]) == (0, 5, 1)
    some = grading.claim4_report(full[full.seed < 2], timings(), ITERATIONS, 0, planned_pairs=5, samples=50)
    assert (some["pairs"], some["single_runs"]) == (2, 0)
    slow = runs(bp_rate=1e-4)
    r = grading.claim4_report(slow[slow.method == grading.BP], timings(), ITERATIONS, 1e-3, planned_pairs=5, samples=50)
    assert not r["bp_settled"] and r["iterations_needed"] > ITERATIONS
    assert grading.claim4_report(only_bp, timings(), ITERATIONS, 1e-3, 5)["bp_settled"]   # the control
    r = grading.claim4_report(full, pd.DataFrame(), ITERATIONS, 0, planned_pairs=5, samples=50)
    assert r["verdict"] == "not judged" and r["reason"] == grading.NO_STEP_TIMES
    done = grading.claim4_report(runs(fg_final=0.28), timings(fg=0.04), ITERATIONS, 0, planned_pairs=5, samples=50)
    assert done["verdict"] == "does not hold" and done["pairs"] == 5 and len(done["table"]) == 4
    assert done["reason"] == grading.LEVELLED_OFF and done["T_ratio"] > 1


def test_step_ratio_is_one_number_everywhere():
    """S_f/S_b from the spread, from the step times and from R_f/R_b is the same number; with
    processes that disagree in level, it is their geometric mean, not a pooled median."""
    t = pd.concat([timings(fg=0.02, bp=0.01).assign(process=0), timings(fg=0.04, bp=0.01, seed=1).assign(process=1)])
    t = pd.concat([t, t[t.name == grading.BP].assign(name="base", seconds=lambda d: d.seconds / 4)])
    costs = grading.step_costs(t)
    s = grading.step_times(t)
    assert costs["S_ratio"] == pytest.approx(s[grading.FG] / s[grading.BP]) == pytest.approx(costs["R_f"] / costs["R_b"])
    assert costs["S_ratio"] == pytest.approx(math.sqrt(2 * 4), rel=0.03) and costs["grade"] == "does not hold"


def test_a_level_never_reached_reads_never_not_inf():
    from fglib.book import tables
    from fglib.book.tables import tolerance_display
    shown = tolerance_display(grading.tolerance_table(runs(fg_final=1.0), timings(), samples=20))
    assert (shown["$T_f/T_b$"] == "never").all() and (shown["$I_f$"] == "never").all()
    reached = tolerance_display(grading.tolerance_table(runs(fg_final=0.28), timings(), samples=20))
    assert not (reached["$T_f/T_b$"] == "never").any()       # the control: reached, a number
    assert "inf" not in shown.to_string() + reached.to_string()
    assert (shown["95% interval"] == "never").all() and not reached["95% interval"].str.contains("never").any()
    assert tables.tolerance_display(grading.tolerance_table(runs(fg_final=0.28), timings(), samples=20).assign(
        **{"95% high": float("inf")}))["95% interval"].str.endswith(" up").all()   # an open end reads 'from x up'


def test_memory_claim_is_graded_over_every_network_with_the_papers_threshold():
    """Within 0.1% on every network holds; one network 39% above makes it partly; all above, does not hold."""
    def table(diffs):
        rows = []
        for i, d in enumerate(diffs):
            rows += [{"network": f"net {i}", "method": grading.BP, "total": 1e8},
                     {"network": f"net {i}", "method": grading.FG, "total": 1e8 * (1 + d)}]
        return pd.DataFrame(rows)
    assert grading.grade_memory(table([0.0005, -0.0002])) == "holds"
    assert grading.grade_memory(table([0.0005, 0.39])) == "partly"
    assert grading.grade_memory(table([0.002, 0.39])) == "does not hold"
    assert grading.memory_differences(table([0.0005, 0.39]))["FG vs BP"].round(6).tolist() == [0.0005, 0.39]


def test_ratio_grades_count_a_target_never_reached_as_not_below():
    assert grading.grade_ratios([0.5, 0.6]) == "holds" and grading.grade_ratios([0.5, 1.2]) == "partly"
    assert grading.grade_ratios([1.5, 1.2]) == "does not hold"
    assert grading.grade_ratios([0.5, float("nan")]) == "partly" and grading.grade_ratios([float("nan")]) == "does not hold"


def test_per_iteration_is_the_iteration_factor_alone_and_says_alike_within_the_band():
    """I_f / I_b needs no step times; 'alike' only inside ALIKE, with a control outside it."""
    same = runs(fg_rate=2e-3, bp_rate=2e-3)
    assert grading.per_iteration(same) == pytest.approx(1.0)
    fast = runs(fg_rate=2e-3, bp_rate=2e-3, fg_final=0.2)   # FG passes backprop's lowest far sooner
    assert 0 < grading.per_iteration(fast) < grading.ALIKE[0]


def test_the_devices_runs_ran_on_are_each_said_once():
    assert grading.devices_said(["CPU (x86_64, 2 threads)", "CPU (x86_64, 1 thread)", "CPU (x86_64, 1 threads)"]) \
        == "CPU (x86_64, 1 and 2 threads)"   # one machine at two thread counts, said once
    assert grading.devices_said(["CPU (x86_64, 2 threads)", "CPU (arm64, 2 threads)", "NVIDIA H200"]) \
        == "CPU (x86_64, 2 threads) and CPU (arm64, 2 threads) and NVIDIA H200"   # the control: machines apart


def depth_rounds(ratios, runs=3, repeats=10, seed=0):
    """Timing rounds of a depth sweep whose R_f/R_b at each depth is known: base 1 ms, backprop
    4 ms, forward gradient ratio x 4 ms, each with 2% noise; every round quiet."""
    rng = np.random.default_rng(seed)
    rows = []
    for depth, ratio in ratios.items():
        for run in range(runs):
            for r in range(repeats):
                for name, t in (("base", 1e-3), (grading.BP, 4e-3), (grading.FG, 4e-3 * ratio),
                                (grading.FG_FORWARD_AD, 8e-3 * ratio)):
                    rows.append({"depth": depth, "run": run, "round": r, "name": name, "disturbed": False,
                                 "seconds": t * (1 + 0.02 * rng.standard_normal()), "device": "CPU (test)"})
    return pd.DataFrame(rows)


def test_claim_five_is_derived_from_the_depth_sweeps_raw_rounds():
    """R_f/R_b per depth recovered from the rounds; graded 'holds' only when it is below 1 at
    every depth; a sweep above 1 at the deepest is the control that must come out 'partly'."""
    table = grading.depth_costs(depth_rounds({1: 0.55, 10: 0.6, 100: 0.8}))
    assert list(table["depth"]) == [1, 10, 100] and list(table["runs"]) == [3, 3, 3]
    assert np.allclose(table["R_f/R_b"], [0.55, 0.6, 0.8], rtol=0.03)
    assert np.allclose(table["R_b"], 4.0, rtol=0.03) and np.allclose(table["R_f/R_b (forward_ad)"], [1.1, 1.2, 1.6], rtol=0.03)
    assert grading.grade_depth(table) == "holds"
    slower = grading.depth_costs(depth_rounds({1: 0.55, 10: 0.6, 100: 1.2}))   # the control
    assert grading.grade_depth(slower) == "partly"
    assert grading.grade_depth(grading.depth_costs(depth_rounds({1: 1.5, 100: 2.0}))) == "does not hold"
    above = grading.depth_numbers(grading.depth_costs(depth_rounds({1: 1.5, 100: 2.0})))
    assert above["below_1_at"] == [] and above["deepest"] == 100 and above["last"] == pytest.approx(2.0, rel=0.03)


def test_the_verdict_reads_claim_five_from_the_saved_rounds(tmp_path):
    """The verdict grades claim 5 from raw/scaling/rounds.csv.gz when it is read; rounds changed on
    disk change the grade with no re-run (control)."""
    from fglib.book import runs as book_runs, verdict
    book_runs.save_table(tmp_path, "scaling", "rounds.csv.gz", depth_rounds({1: 0.55, 100: 0.8}).drop(columns="device"))
    row = verdict.claim_depth(verdict.with_raw({}, tmp_path), cpu=False)
    assert row["verdict"] == "holds" and row["numbers"]["below_1_at"] == [1, 100] and row["numbers"]["deepest"] == 100
    book_runs.save_table(tmp_path, "scaling", "rounds.csv.gz", depth_rounds({1: 0.55, 100: 1.2}).drop(columns="device"))
    assert verdict.claim_depth(verdict.with_raw({}, tmp_path), cpu=False)["verdict"] == "partly"


def test_claim_one_holds_only_when_both_tests_sit_within_the_bound():
    assert grading.grade_unbiased(2.1, 3.0) == "holds"
    assert grading.grade_unbiased(5.0, 3.0) == "does not hold"    # the controls: either test fails it
    assert grading.grade_unbiased(2.1, 4.6) == "does not hold"


def test_grades_of_several_experiments_combine_into_one_word():
    """'partly' only where the judged experiments disagree; experiments still to judge never make
    it 'partly' (the control: two 'does not hold' and two not judged is not 'partly')."""
    nj = grading.NOT_JUDGED
    assert grading.combine_grades(["holds", "holds"]) == "holds"
    assert grading.combine_grades(["holds", "does not hold"]) == "partly"
    assert grading.combine_grades(["does not hold", "does not hold", nj, nj]) == "does not hold"
    assert grading.combine_grades(["holds", nj, nj, nj]) == nj
    assert grading.combine_grades([nj, "holds", "holds"]) == "holds"
    assert grading.combine_grades(["holds", "does not hold", nj, nj, nj]) == "partly"
    assert grading.combine_grades([]) == grading.NOT_RUN


def test_alike_per_iteration_is_read_at_the_smallest_tolerance_the_curves_allow():
    """Forward gradient ends 0.3% above backprop's lowest: never at 0%, but alike within 0.5%
    (the MLP at 2e-5); the control ends 5% above and is never within 2%."""
    close = runs(fg_rate=2e-3, bp_rate=2e-3)
    close.loc[close["method"] == grading.FG, "loss"] *= 1.003
    assert math.isinf(grading.time_ratio(close, 1.0, 1.0)["I_ratio"])
    ratio, tolerance = grading.per_iteration_at(close)
    assert tolerance == 0.005 and grading.alike(ratio)
    far = runs(fg_rate=2e-3, bp_rate=2e-3)
    far.loc[far["method"] == grading.FG, "loss"] *= 1.05     # the control
    assert grading.per_iteration_at(far) == (math.inf, None)


def test_the_depth_numbers_flag_a_subnormal_deepest_point_and_its_flushed_timing():
    table = grading.depth_costs(depth_rounds({1: 2.4, 100: 0.3}))
    subnormal = pd.DataFrame([{"depth": 100, "largest |activation|, last hidden layer": 3.7e-39,
                               "smallest normal float32": 1.2e-38, "forward (ms), subnormals kept": 760.0,
                               "forward (ms), subnormals flushed": 120.0}])
    n = grading.depth_numbers(table, subnormal)
    assert n["subnormal"] and n["subnormal_slowdown"] == pytest.approx(760 / 120)
    normal = subnormal.assign(**{"largest |activation|, last hidden layer": 1e-20})   # the control
    assert not grading.depth_numbers(table, normal)["subnormal"]
    table = grading.depth_costs(depth_rounds({1: 2.4, 64: 2.2, 100: 0.3}))
    flushed = grading.depth_costs(depth_rounds({64: 2.3, 100: 2.1}))   # the deepest again, subnormals flushed
    n = grading.depth_numbers(table, subnormal, flushed)
    assert n["below_1_at"] == [100] and n["flushed_last"] == pytest.approx(2.1, rel=0.03)
    assert n["control_depth"] == 64 and n["control_kept"] == pytest.approx(2.2, rel=0.03)
    assert n["control_flushed"] == pytest.approx(2.3, rel=0.03)
    assert math.isnan(grading.depth_numbers(table, subnormal, flushed[flushed["depth"] == 64])["flushed_last"])




def zeroth_order_tables(i_fd, i_fg=1000.0, i_bp=10.0):
    """A zeroth-order chapter's derived tables, fabricated: the MLP, one row per method."""
    best = pd.DataFrame([{"model": "mlp", "dtype": "float32", "estimator": "central difference", "best h": 1e-4,
                          "median relative error there": 0.022, "forward mode's error": 1.6e-7}])
    to_target = pd.DataFrame([{"model": "mlp", "method": m, "I (iterations)": i, "test accuracy": 0.82}
                              for m, i in (("finite difference", i_fd), (grading.FG, i_fg), (grading.BP, i_bp))])
    quant = pd.DataFrame([{"method": m, "test_accuracy": a}
                          for m, a in (("finite difference", 0.76), (grading.FG, 0.12), (grading.BP, 0.13))])
    return best, to_target, quant



def test_a_settings_table_reads_as_a_reader_writes_settings():
    """No Python literals in a chapter's settings: switches read yes or no, None reads 'default',
    and settings of how the chapter ran (smoke, remeasure, train_runs, results_dir) appear only
    when they are not the usual value (the control: each shown when it differs)."""
    from fglib.book.report import environment
    table = environment("cpu", smoke=False, remeasure=True, eval_examples=None, rates=[1e-4, 3e-4, 0.01],
                        train_runs=0, results_dir="results")
    values = dict(zip(table["setting"], table["value"]))
    assert "smoke" not in values and values["remeasure"] == "yes" and values["eval_examples"] == "default"
    assert "train_runs" not in values and "results_dir" not in values
    other = environment("cpu", remeasure=False, train_runs=2, results_dir="elsewhere")
    other = dict(zip(other["setting"], other["value"]))
    assert "remeasure" not in other and other["train_runs"] == "2" and other["results_dir"] == "elsewhere"
    assert values["rates"] == "1e-4, 3e-4, 0.01"   # not Python's 0.0001, 0.0003
    assert not {"True", "False", "None"} & set(table["value"])
    smoke = environment("cpu", smoke=True)
    assert dict(zip(smoke["setting"], smoke["value"]))["smoke"] == "yes"


def test_claim_two_is_derived_from_the_raw_curves_of_the_test_functions():
    """function_numbers: per function, the median over runs of the first recorded iteration below
    the level (a run that never gets there does not count; a method with no such run is left
    out), and backprop's time per iteration over forward gradient's. function_raw keeps the
    schedule and each run's last row, so a diverged run's end survives the thinning."""
    from fglib.book.experiments import function_raw
    from fglib.book.grading import BP, FG, function_numbers
    rows = []
    for method, hits, dt in ((FG, [100, 300, None], 2.0), (BP, [200, 200, 200], 1.0)):
        for run, hit in enumerate(hits):
            for i in range(0, 1001):
                rows.append({"function": "beale", "method": method, "run": run, "iteration": i, "time": i * dt,
                             "loss": 1e-4 if hit is not None and i >= hit else 1.0, "split": "train"})
    curves = pd.DataFrame(rows)
    numbers = function_numbers(curves)
    assert numbers["reach"]["beale"] == {FG: 200.0, BP: 200.0}   # median of 100 and 300
    assert numbers["backprop_over_fg_time_per_iteration"]["beale"] == pytest.approx(0.5)
    assert "rosenbrock" in numbers["reach"] and numbers["reach"]["rosenbrock"] == {}
    stopped = curves[~((curves.method == FG) & (curves.run == 2) & (curves.iteration > 777))]   # diverged at 777
    thin = function_raw({"beale": stopped.drop(columns="function")}, eval_points=50)
    assert len(thin) < len(stopped) / 5
    assert 777 in set(thin[(thin.method == FG) & (thin.run == 2)].iteration) and 1000 in set(thin.iteration)
    reach = function_numbers(thin)["reach"]["beale"]
    assert 200 <= reach[BP] <= 200 * 1000 ** (1 / 50)   # the schedule decides I to within its log spacing


def test_claim_one_is_derived_from_the_monte_carlo_tables():
    """unbiased_numbers: the largest |z| over every component, the log-log slope of the mean error
    against K (fabricated as K^-1/2: slope -0.5), and the second moment's largest deviation from its
    formula in standard errors; the verdict says 'does not hold' in words when a z-score is too
    large (the control), never 'within ... in every test'."""
    from fglib.book import verdict
    from fglib.book.grading import unbiased_numbers
    mc = pd.DataFrame([{"case": c, "K": k, "repeat": r, "relative error": 2 * k ** -0.5 * (1 + 0.01 * r)}
                       for c in ("a", "b") for k in (1, 10, 100) for r in range(3)])
    z = pd.DataFrame([{"case": "a", "direction": "normal", "component": i, "z": v, "samples": 1000}
                      for i, v in enumerate([0.5, -3.2, 1.0])])
    moments = pd.DataFrame([{"n": n, "direction": "normal", "E‖g‖² / ‖∇f‖²": n + 2 + dev, "standard error": 1.0,
                             "formula": n + 2, "mean cosine": 1 / n} for n, dev in ((10, 0.5), (1000, -2.0))])
    u = unbiased_numbers(mc, z, moments)
    assert u["slopes"]["a"] == pytest.approx(-0.5) and u["max_abs_z"] == 3.2 and u["z_samples"] == 1000
    assert u["max_second_moment_deviation_se"] == 2.0 and u["max_dim"] == 1000 and u["cos_at_max_dim"] == 0.001
    row = verdict.claim_unbiased({"unbiasedness": u})
    assert row["verdict"] == "holds" and row["numbers"]["max_abs_z"] == 3.2 and row["numbers"]["moment_se"] == 2.0
    bad = verdict.claim_unbiased({"unbiasedness": unbiased_numbers(mc, z.assign(z=z.z * 2), moments)})
    assert bad["verdict"] == "does not hold" and bad["numbers"]["max_abs_z"] == 6.4







def test_a_count_reads_singular_or_plural():
    assert [grading.count_words(n, "run") for n in (1, 5, 1000)] == ["1 run", "5 runs", "1,000 runs"]




def test_a_pilot_that_had_not_settled_gives_the_run_length_that_settles_it():
    """A backprop pilot still falling under a decay: run_length_needed is longer than the pilot."""
    still = runs(bp_rate=1e-4)
    pilot = still[still["method"] == grading.BP]
    assert grading.run_length_needed(pilot, ITERATIONS, 1e-3) > ITERATIONS


def test_runs_cut_shorter_than_their_curve_levels_off_are_not_judged():
    """Backprop's loss falls as e^{-0.002 i}: cut at 3,000 iterations its mean curve still fell 3.8%
    over the last fifth, cut at 4,000 under 1%, so runs are judged from between the two on. The
    control: a curve still falling at the full 10,000 gives no length at all."""
    start = grading.judged_from(runs(), None)
    assert 3_000 < start <= 4_000
    assert grading.judged_from(runs(bp_rate=1e-4), None) is None


def test_the_verdicts_depth_row_carries_the_deepest_point_flushed_beside_its_sweep_value():
    """Claim 5's numbers put the deepest depth's R_f/R_b with subnormals flushed beside the sweep's,
    so that the bare 0.30 never stands alone (the control: no flushed timing there, NaN)."""
    from fglib.book import verdict
    table = grading.depth_costs(depth_rounds({1: 2.4, 64: 2.2, 100: 0.3}))
    flushed = grading.depth_costs(depth_rounds({64: 2.3, 100: 2.1}))
    scaling = {"table": table, "device": "CPU (test)", "runs": 5, "flushed": flushed}
    row = verdict.claim_depth({"scaling": scaling})["numbers"]
    assert row["last"] == pytest.approx(0.3, rel=0.03) and row["flushed_last"] == pytest.approx(2.1, rel=0.03)
    bare = verdict.claim_depth({"scaling": {**scaling, "flushed": flushed[flushed["depth"] == 64]}})["numbers"]
    assert math.isnan(bare["flushed_last"])


def test_a_subnormal_deepest_point_is_graded_at_its_flushed_timing():
    """The reader's point: R_f/R_b below 1 only at a depth whose activations are subnormal on this
    CPU times the processor, not the methods; graded at its flushed timing (2.1) claim 5 is not
    reproduced on this CPU. The controls: without the subnormal row, or without a flushed timing
    there, the measured 0.30 counts and the grade is partly."""
    from fglib.book import verdict
    table = grading.depth_costs(depth_rounds({1: 2.4, 64: 2.2, 100: 0.3}))
    flushed = grading.depth_costs(depth_rounds({64: 2.3, 100: 2.1}))
    subnormal = pd.DataFrame([{"depth": 100, "largest |activation|, last hidden layer": 3.7e-39,
                               "smallest normal float32": 1.2e-38, "forward (ms), subnormals kept": 760.0,
                               "forward (ms), subnormals flushed": 120.0}])
    scaling = {"table": table, "device": "CPU (test)", "runs": 5, "flushed": flushed, "subnormal": subnormal}
    row = verdict.claim_depth({"scaling": scaling})
    assert row["verdict"] == grading.NOT_ON_CPU and row["numbers"]["graded_flushed"]
    assert verdict.claim_depth({"scaling": {**scaling, "subnormal": None}})["verdict"] == "partly"
    assert verdict.claim_depth({"scaling": {**scaling, "flushed": flushed[flushed["depth"] == 64]}})["verdict"] == "partly"
    on_gpu = verdict.claim_depth({"scaling": {**scaling, "device": "NVIDIA H200"}}, cpu=False)
    assert on_gpu["verdict"] == "partly"   # a GPU computes subnormals at full speed: its timing stands


def test_a_pairing_reads_as_method_with_optimiser():
    assert grading.pairing_words("forward gradient, Adam") == "forward gradients with Adam"
    assert grading.pairing_words("backprop, momentum 0.9") == "backprop with momentum 0.9"
    assert grading.pairing_words("backprop") == "backprop"   # no optimiser named: the method alone


def test_the_iteration_a_curve_reaches_a_level_is_interpolated_between_evaluations():
    """A straight fall from 2 at iteration 1,000 to 1 at 3,000, evaluated only there: level 1.5 is
    reached at 2,000, not at the next evaluation (the control: a level met exactly at an evaluation
    is that evaluation, and one never met is NaN)."""
    curve = pd.Series([2.3, 2.0, 1.0, 0.9], index=[0, 1_000, 3_000, 10_000])
    assert grading.first_at_or_below(curve, 1.5) == pytest.approx(2_000)
    assert grading.first_at_or_below(curve, 1.0) == 3_000 and grading.first_at_or_below(curve, 2.3) == 0
    assert math.isnan(grading.first_at_or_below(curve, 0.5))
    # On a convex falling curve the straight line lies above it: the estimate from coarse
    # evaluations is never early, and it is nearer the truth than the next evaluation is.
    fine = runs(fg_final=0.28)                       # evaluated every 50 iterations late on
    coarse = fine[fine["iteration"].isin([0, 10, 100, 1_000, 3_000, 7_000, 10_000])]
    i_fine, i_coarse = (grading.time_ratio(r, 1, 1)["I_f"] for r in (fine, coarse))
    assert 3_000 < i_fine <= i_coarse < 7_000


def test_each_pair_is_measured_on_its_own_seed():
    """Seed 0: forward gradient passes backprop's lowest at about half its iterations; seed 1:
    never (the control)."""
    both = pd.concat([runs(fg_final=0.28, seeds=1), runs(fg_final=0.5, seeds=2).query("seed == 1")])
    pairs = grading.paired_ratios(both)
    assert pairs.index.tolist() == [0, 1]
    assert pairs.loc[0, "I_f/I_b"] < 1 and pairs.loc[0, "I_b"] == GRID[-1] and math.isinf(pairs.loc[1, "I_f/I_b"])


def _length_runs(fg_clock):
    """Two identical seeds; backprop's validation loss 1 / (1 + i/1000) still falling at the end
    (lowest at the last evaluation); forward gradients' loss is backprop's at fg_clock(i)."""
    import pandas as pd
    rows = []
    for seed in (0, 1):
        for i in range(0, 20_001, 500):
            rows.append({"method": grading.BP, "seed": seed, "split": "validation", "iteration": i,
                         "loss": 1 / (1 + i / 1000)})
            rows.append({"method": grading.FG, "seed": seed, "split": "validation", "iteration": i,
                         "loss": 1 / (1 + fg_clock(i) / 1000)})
    return pd.DataFrame(rows)


def _constant_timings(s_f, s_b, processes=3):
    import pandas as pd
    return pd.DataFrame([{"process": p, "round": r, "name": n, "seconds": s}
                         for p in range(processes) for r in range(10)
                         for n, s in ((grading.FG, s_f), (grading.BP, s_b), ("base", 5e-4))])


def test_claim_4_against_run_length_holds_from_where_the_iterations_pay_for_the_step():
    """Forward gradients keep pace with backprop up to 5,000 iterations, then go three times as
    fast; each step costs 1.5 times backprop's. Cut at L, I_f/I_b = (5000 + (L - 5000)/3)/L, and
    T_f/T_b = 1.5 I_f/I_b < 1 from L > 10,000: the claim holds from 10,500 (the next evaluation).
    The controls: forward gradients twice as fast throughout hold from the first length; 1.5 times
    slower throughout never hold."""
    late = _length_runs(lambda i: i if i <= 5000 else 5000 + 3 * (i - 5000))
    table = grading.by_run_length(late, _constant_timings(1.5e-3, 1e-3), samples=50, paper_step_ratio=0.5)
    at = table.set_index("length")
    assert at.loc[4000, "I_f/I_b"] == pytest.approx(1.0) and at.loc[4000, "T_f/T_b"] == pytest.approx(1.5)
    assert at.loc[20_000, "I_f/I_b"] == pytest.approx((5000 + 15_000 / 3) / 20_000)
    assert at.loc[20_000, "paper T_f/T_b"] == pytest.approx(0.5 * at.loc[20_000, "I_f/I_b"])
    assert table["bp lowest at end"].all()
    assert grading.holds_from(table) == 10_500 and grading.holds_from(table, "paper T high") == 1000
    numbers = grading.run_length_numbers(table)
    assert numbers["holds_from"] == 10_500 and numbers["bp_lowest_at_end_always"]
    assert numbers["holds_before"] == table["length"][table["length"] < 10_500].max()   # it lies between the two
    # at the paper's step ratio 0.5, T_f/T_b = 0.5 I_f/I_b comes down to 0.31 once I_f/I_b <= 0.62,
    # from L >= 11,628: the next evaluation, 12,000; a level it never comes down to gives None
    assert grading.reaches_from(table, 0.31) == 12_000 and grading.reaches_from(table, 0.1) is None
    fast = grading.by_run_length(_length_runs(lambda i: 2 * i), _constant_timings(1.5e-3, 1e-3), samples=50)
    assert grading.holds_from(fast) == fast["length"].min()
    slow = grading.by_run_length(_length_runs(lambda i: i / 1.5), _constant_timings(1.5e-3, 1e-3), samples=50)
    assert grading.holds_from(slow) is None and math.isnan(grading.run_length_numbers(slow)["holds_from"])
    assert math.isnan(grading.run_length_numbers(slow)["holds_before"])   # the control: nothing to lie between
    # forward gradients allowed to run on past backprop's length: how many iterations they need
    assert slow.set_index("length").loc[10_000, "I_f/I_b, FG on"] == pytest.approx(1.5)
    assert not math.isfinite(slow.set_index("length").loc[10_000, "I_f/I_b"])


def test_shorter_lengths_at_which_the_claim_held_before_it_held_for_good_are_named():
    """At the paper's step ratio the claim holds at every length from 8,000 on, and also at 2,000
    to 3,000 (the upper end of the interval below 1 there, above it at 4,000 to 6,000): those
    shorter lengths are named. The control: where it held at no shorter length, none is named."""
    def table(paper_high):
        n = len(paper_high)
        return pd.DataFrame({"length": [1000 * (k + 1) for k in range(n)], "I_f/I_b": [0.9] * n, "T_f/T_b": [2.0] * n,
                             "S_f/S_b": [2.0] * n, "T low": [1.5] * n, "T high": [2.5] * n, "I_f/I_b, FG on": [0.9] * n,
                             "bp lowest at end": [True] * n, "paper T high": paper_high})
    numbers = grading.run_length_numbers(table([1.2, 0.9, 0.95, 1.1, 1.3, 1.05, 1.01, 0.9, 0.8]))
    assert numbers["holds_from_paper"] == 8000
    assert (numbers["paper_earlier_low"], numbers["paper_earlier_high"]) == (2000, 3000)
    control = grading.run_length_numbers(table([1.2, 1.1, 1.1, 1.1, 1.3, 1.05, 1.01, 0.9, 0.8]))
    assert control["holds_from_paper"] == 8000 and math.isnan(control["paper_earlier_low"])


def test_the_lengths_between_an_earlier_hold_and_the_lasting_one_are_named_unbounded_only_if_they_are():
    """Between 3,000 (held) and 8,000 (holds for good) the interval at the paper's ratio had no upper
    end at every length: paper_gap_unbounded. The control: one bounded length there (1.3) says no."""
    def table(paper_high):
        n = len(paper_high)
        return pd.DataFrame({"length": [1000 * (k + 1) for k in range(n)], "I_f/I_b": [0.9] * n, "T_f/T_b": [2.0] * n,
                             "S_f/S_b": [2.0] * n, "T low": [1.5] * n, "T high": [2.5] * n, "I_f/I_b, FG on": [0.9] * n,
                             "bp lowest at end": [True] * n, "paper T high": paper_high})
    inf = math.inf
    assert grading.run_length_numbers(table([1.2, 0.9, 0.95, inf, inf, inf, inf, 0.9, 0.8]))["paper_gap_unbounded"]
    assert not grading.run_length_numbers(table([1.2, 0.9, 0.95, inf, 1.3, inf, inf, 0.9, 0.8]))["paper_gap_unbounded"]


def test_the_step_ratio_is_taken_where_the_device_was_used_whole():
    import pandas as pd
    one = _constant_timings(1.0e-3, 1e-3).assign(threads=1)
    two = _constant_timings(0.9e-3, 1e-3).assign(threads=2, process=lambda t: t["process"] + 3)
    both = pd.concat([one, two])
    s = grading.step_times(grading.whole_device(both))
    assert s[grading.FG] / s[grading.BP] == pytest.approx(0.9)
    s1 = grading.step_times(grading.at_threads(both, 1))
    assert s1[grading.FG] / s1[grading.BP] == pytest.approx(1.0)
    mixed = grading.step_times(both)   # the control: both counts mixed give neither
    assert 0.9 < mixed[grading.FG] / mixed[grading.BP] < 1.0


def test_a_pair_that_never_reached_reads_never_and_seeds_read_as_whole_numbers():
    """tables.paired_display: the pair whose forward-gradient run never reached its level shows
    'never' (significant() cannot format an infinite ratio), seeds as 0, 1, not 0.00."""
    from fglib.book.tables import paired_display
    both = pd.concat([runs(fg_final=0.28, seeds=1), runs(fg_final=0.5, seeds=2).query("seed == 1")])
    shown = paired_display(grading.paired_ratios(both), {"norm": pd.Series({0: 0.5, 1: 0.25})})
    assert shown["seed"].tolist() == ["0", "1"] and shown.loc[1, "$I_f$"] == "never" == shown.loc[1, "$I_f/I_b$"]
    assert shown.loc[0, "$I_f$"] != "never" and shown["norm"].tolist() == ["0.500", "0.250"]
    from fglib.book.tables import significant
    assert significant(math.inf) == "∞" and significant(-math.inf) == "−∞" and significant(2.0) == "2.00"


def test_a_pages_numbers_are_nan_until_measured():
    """page_numbers and cost_numbers before any pair is graded and any step timed: NaN, not an error,
    so that a chapter's sentences have their glued numbers from its first run on."""
    numbers = grading.page_numbers({"pairs": 0, "verdict": grading.NOT_JUDGED}, None, pd.DataFrame(), pd.DataFrame())
    assert numbers["pairs"] == 0 and all(math.isnan(numbers[k]) for k in ("I", "T", "S", "never", "memory_ratio"))
    assert grading.cost_numbers(None)["processes"] == 0 and math.isnan(grading.cost_numbers(None)["R_f"])


def test_rank_correlation_is_spearmans_with_an_exact_permutation_p():
    """On fabricated data: a monotone pair has rho 1 and p = 2/120 with five points (only the two
    perfect orderings reach |rho| = 1); the CNN's five seeds' pattern gives rho -0.7 and p > 0.05;
    the control, a shuffled order, is not perfect."""
    from fglib.book.grading import rank_correlation
    rho, p = rank_correlation([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 120)
    rho, p = rank_correlation([0.143, 0.120, 0.118, 0.127, 0.125], [0.716, 1.97, 2.23, 1.72, 0.619])
    assert rho == pytest.approx(-0.7) and p > 0.05
    assert abs(rank_correlation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])[0]) < 1
    with pytest.raises(ValueError, match="3 to 8 pairs"):
        rank_correlation([1, 2], [3, 4])


def test_a_setting_reads_as_a_reader_writes_it_and_names_with_commas_stay_apart():
    """Lists join by commas, but by ' / ' when an item has a comma of its own ('FG, normal'), so
    that a list of such names reads as that many names (the control: plain names keep commas)."""
    from fglib.book.report import plain_value
    assert plain_value(["logreg", "mlp"]) == "logreg, mlp"
    assert plain_value({"all layers": ["FG, normal", "backprop"], "last layer": ["MeZO"]}) == \
        "all layers: FG, normal / backprop; last layer: MeZO"
    assert plain_value([2e-4, 1e-3]) == "2e-4, 0.001" and plain_value(None) == "default" and plain_value(True) == "yes"


def test_the_grid_bracket_holds_the_read_crossing_and_narrows_with_a_denser_grid():
    """Forward gradient crosses backprop's lowest loss between two evaluations: the crossing the
    paper's rule reads off the straight line lies inside the bracket, whose ends are those two
    evaluations, and T_f / T_b at either end is I_f / I_b times the step ratio. Control: the same
    curves evaluated only every 1,000 iterations give a wider bracket around the same crossing."""
    from fglib.to_target import crossing_bracket
    assert crossing_bracket([0, 10, 20], [3.0, 2.0, 1.0], 1.5) == (10.0, 20.0)
    assert crossing_bracket([0, 10, 20], [3.0, 2.0, 1.0], 3.0) == (0.0, 0.0)   # there from the start
    assert all(math.isnan(v) for v in crossing_bracket([0, 10, 20], [3.0, 2.0, 1.0], 0.5))
    dense = runs(fg_final=0.28)
    read = grading.time_ratio(dense, 2.0, 1.0)
    b = grading.grid_bracket(dense, 2.0)
    assert b["I_f low"] < read["I_f"] <= b["I_f high"] and b["I_b"] == read["I_b"]
    assert b["T low"] < read["T_ratio"] <= b["T high"]
    assert b["T high"] == pytest.approx(2.0 * b["I_f high"] / b["I_b"])
    sparse = dense[dense["iteration"] % 1000 == 0]
    wide = grading.grid_bracket(sparse, 2.0)
    assert wide["I_f high"] - wide["I_f low"] > b["I_f high"] - b["I_f low"]
    never = grading.grid_bracket(runs(fg_final=0.5), 2.0)
    assert math.isnan(never["T low"]) and math.isnan(never["T high"])


def test_every_chapter_setting_says_what_it_means():
    """Each name in a chapter's parameters cell has a meaning in the settings table (a reader sees
    'n_steps' and needs to know what it counts); the control: a made-up name has none."""
    import json
    import re
    from pathlib import Path
    from fglib.book.report import SETTING_MEANINGS, environment, meaning_of
    missing = []
    for chapter in sorted(Path(__file__).parents[1].joinpath("book").glob("*.ipynb")):
        for cell in json.loads(chapter.read_text())["cells"]:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                names = re.findall(r"^(\w+)\s*=", "".join(cell["source"]), re.M)
                missing += [f"{chapter.stem}: {n}" for n in names if not SETTING_MEANINGS.get(n)]
    assert not missing, missing
    table = environment("cpu", seed=0, made_up_setting=3, meanings={"seed": "the seed of run 1"})
    meanings = dict(zip(table["setting"], table["meaning"]))
    assert meanings["seed"] == "the seed of run 1" and meanings["made_up_setting"] == ""
    assert meaning_of("rates, k_rates") == SETTING_MEANINGS["rates"] + "; " + SETTING_MEANINGS["k_rates"]
    import dataclasses
    from fglib.book.report import PLAN_MEANINGS
    from fglib.book.runs import Plan
    assert all(meaning_of(f"plan: {f.name}") for f in dataclasses.fields(Plan) if f.name != "experiment")
    assert meaning_of("plan: made_up") == ""


def test_every_row_of_every_committed_settings_table_says_what_it_means():
    """The settings tables the chapters show (their committed outputs): no row without a meaning,
    the rows a chapter adds itself included. The control: a table row with an empty meaning cell is
    found by the same reading."""
    import json
    from pathlib import Path

    def empty_rows(markdown):
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()[2:]]
        return [r[0] for r in rows if len(r) >= 3 and not r[2]]

    found = []
    for chapter in sorted(Path(__file__).parents[1].joinpath("book").glob("*.ipynb")):
        for cell in json.loads(chapter.read_text())["cells"]:
            for output in cell.get("outputs", []):
                text = output.get("data", {}).get("text/markdown", "")
                text = "".join(text) if isinstance(text, list) else text
                if text.startswith("| setting") and "| meaning" in text.splitlines()[0]:
                    found += [f"{chapter.stem}: {row}" for row in empty_rows(text)]
    assert not found, found
    assert empty_rows("| setting | value | meaning |\n|:--|:--|:--|\n| x | 1 |  |") == ["x"]


def test_a_mean_is_lower_or_higher_only_beyond_the_two_spreads():
    """grading.against: beyond the sum of the two sds a mean is 'lower' or 'higher'; within it,
    'within the spread' (the control: the same means with wider spreads); a single run, None."""
    assert grading.against(30.0, 1.0, 35.0, 2.0) == "lower" and grading.against(35.0, 2.0, 30.0, 1.0) == "higher"
    assert grading.against(30.0, 3.0, 35.0, 2.5) == "within the spread"
    assert grading.against(30.0, float("nan"), 35.0, 2.0) is None
