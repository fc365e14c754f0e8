"""The grader: fabricated results (too short, levelled, noise-level difference) get the grades
the rules say, and the verdict table is generated from saved results."""
import math
import re

import pandas as pd
import pytest
import torch

from fglib import to_target
from fglib.book import verdict


def curves(fg_losses, bp_losses, runs=3, noise=0.0):
    """Validation rows of `runs` paired runs; run r's losses are shifted by r * noise."""
    rows = []
    for method, losses in (("forward gradient", fg_losses), ("backprop", bp_losses)):
        for r in range(runs):
            rows += [{"method": method, "run": r, "split": "validation", "iteration": 100 * i, "time": 0.01 * i,
                      "loss": loss + r * noise} for i, loss in enumerate(losses)]
    return pd.DataFrame(rows)


LEVELLED = [2.3, 1.0, 0.6, 0.45, 0.41, 0.40, 0.40, 0.40, 0.40, 0.40, 0.40]


def test_eval_schedule_is_dense_early_and_at_most_2_percent_apart_late():
    for n in (1_000, 30_000, 70_000):
        s = to_target.eval_schedule(n, 60)
        assert s[0] == 0 and s[-1] == n and s[:5] == [0, 1, 2, 3, 4]
        assert len(s) <= 62 + 26 and all(b > a for a, b in zip(s, s[1:]))
        late = [i for i in s if i >= n // 2]
        assert late[0] <= n // 2 + 0.02 * n and max(b - a for a, b in zip(late, late[1:])) <= 0.02 * n
    log_only = to_target.eval_schedule(30_000, 60, late_spacing=None)   # the control: ~18% gaps late
    late = [i for i in log_only if i >= 15_000]
    assert max(b - a for a, b in zip(late, late[1:])) > 0.15 * 30_000


def test_confidence_interval_covers_the_mean_95_percent_of_the_time():
    import torch
    g = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(2000):
        m, half, n = to_target.mean_ci(torch.randn(5, generator=g).tolist())
        hits += abs(m) <= half
    assert 0.93 < hits / 2000 < 0.97


MNIST = {"device": "CPU (test)", "ratio": 1.8, "ratio_sd": 0.1, "ratio_forward_ad": 2.2, "engine": "fglib",
         "runtime_verdict": "does not hold", "T_ratio": math.nan, "I_ratio": math.nan, "I_ratio_ci": math.nan,
         "S_ratio": 1.8, "time_verdict": "not judged", "time_verdict_why": "run too short", "runs_reached": 0,
         "runs": 5, "iterations": 2000}


def test_missing_results_say_not_run_yet():
    table = verdict.claims_table({})
    assert len(table) == 6 and (table["verdict"] == verdict.NOT_RUN).all()


def test_cpu_speed_claims_are_not_reproduced_rather_than_refuted_and_gpu_column_fills_in():
    table = verdict.claims_table({"mnist": {"logistic regression": MNIST}}).set_index("#")
    assert table.loc[3, "verdict"] == verdict.NOT_ON_CPU
    assert table.loc[3, "GPU"] == verdict.UNTESTED_GPU
    assert table.loc[4, "verdict"] == "not judged" and "run too short" in table.loc[4, "ours"].lower()
    assert "engine fglib" in table.loc[3, "evidence"] and "5 × 2,000" in table.loc[4, "evidence"]
    gpu = {"mnist": {"logistic regression": {**MNIST, "ratio": 0.5, "runtime_verdict": "holds", "device": "H100"}}}
    assert verdict.claims_table({"mnist": {"logistic regression": MNIST}}, gpu).set_index("#").loc[3, "GPU"] == "holds"
    assert verdict.claims_table({}).set_index("#").loc[1, "GPU"] == verdict.DEVICE_FREE
    assert "](logreg.ipynb)" in verdict.to_markdown(table.reset_index())
    evidence = verdict.evidence_markdown(table.reset_index())  # each row's evidence and rule, listed
    assert "engine fglib" in evidence and "run too short" in evidence.lower() and "Rule: holds if R_f/R_b < 1" in evidence


def test_the_step_claim_lists_each_model_once_with_its_timing_processes():
    """The MLP at its two rates shares one set of step times: claim 3 quotes it once, and its
    evidence is the timing processes, not the training runs (the control: claim 4 lists both)."""
    two = {"MLP, rate 2e-5": {**MNIST, "processes": 3}, "MLP, rate 2e-4": {**MNIST, "processes": 3}}
    table = verdict.claims_table({"mnist": two}).set_index("#")
    assert table.loc[3, "ours"].count("MLP") == 1 and "3 separate timing processes per model" in table.loc[3, "evidence"]
    assert "runs" not in table.loc[3, "evidence"]
    assert "MLP, rate 2e-5" in table.loc[4, "ours"] and "MLP, rate 2e-4" in table.loc[4, "ours"]


def test_claim_two_is_graded_per_iteration_only():
    """Time per iteration on a two-parameter function is Python overhead on this device: shown
    beside the grade, never part of it. The control: iterations far apart do change the grade."""
    t = {"device": "cpu", "runs": 10, "levels": {"beale": 1e-3, "rosenbrock": 1e-2},
         "reach": {"beale": {"backprop": 556, "forward gradient": 547},
                   "rosenbrock": {"backprop": 9086, "forward gradient": 9095}},
         "backprop_over_fg_time_per_iteration": {"beale": 1.05, "rosenbrock": 0.44}}
    row = verdict.claims_table({"test_functions": t}).set_index("#").loc[2]
    assert row["verdict"] == "holds" and "not graded" in row["evidence"] and "Rosenbrock 0.44" in row["evidence"]
    assert "(FG/BP: Beale 0.98, Rosenbrock 1.00)" in row["short"]   # named as the paper names them
    t["reach"]["rosenbrock"]["forward gradient"] = 30_000
    assert verdict.claims_table({"test_functions": t}).set_index("#").loc[2, "verdict"] == "partly"
    del t["reach"]["rosenbrock"]["forward gradient"]   # forward gradient never got there: not alike
    row = verdict.claims_table({"test_functions": t}).set_index("#").loc[2]
    assert row["verdict"] == "partly" and "forward gradient did not reach loss 0.01" in row["ours"]
    t["reach"] = {name: {} for name in t["reach"]}     # a run too short for either: not judged, said so
    row = verdict.claim_test_functions({"test_functions": t})
    assert row["verdict"] == "not judged" and "backprop did not reach loss 0.001" in row["short"]


def test_each_pair_is_judged_against_its_own_backprop_run():
    """Backprop runs scattered around their mean: every one reaches its own best loss, so no
    pair is lost to the mean curve's minimum (which no single run need reach)."""
    c = curves(LEVELLED, LEVELLED, runs=3, noise=0.02)   # run r levels off at 0.40 + 0.02 r
    parts = to_target.decompose(c, 1.0, 1.0)
    assert parts["runs_reached"] == 3 and parts["I_ratio"] == [1.0, 1.0, 1.0]
    assert [round(t, 4) for t in parts["targets"]] == [0.404, 0.4242, 0.4444]
    mean_min = c[c.method == "backprop"].groupby("iteration")["loss"].mean().min()
    assert to_target.decompose(c, 1.0, 1.0, target=mean_min)["runs"] < 3  # run 2 never reaches the mean's best


def test_tolerance_must_be_non_negative():
    import pytest
    with pytest.raises(ValueError, match="tolerance"):
        to_target.decompose(curves(LEVELLED, LEVELLED), 1.0, 1.0, tolerance=-0.1)


def test_a_target_the_initial_model_already_meets_pairs_nothing():
    """A network that has not learned: backprop's best is within 1% of the start, so the
    target is met at iteration 0 and an iteration ratio would read 0. No pair counts."""
    stuck = [2.3026, 2.300, 2.298, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297]
    parts = to_target.decompose(curves(stuck, stuck), 1.0, 1.0)
    assert parts["runs"] == 0 and parts["runs_reached"] == 0 and math.isnan(parts["T_ratio"])


def test_learning_rates_read_as_the_paper_writes_them():
    from fglib.book.report import rate_text
    assert [rate_text(r) for r in (2e-4, 0.0002, 2e-5, 5.5e-4, 1e-3, 0.1, 1.5)] == [
        "2e-4", "2e-4", "2e-5", "5.5e-4", "0.001", "0.1", "1.5"]
    assert f"{2e-4:g}" == "0.0002"   # the control: the plain format the reader should not see


def test_budget_spent_is_the_share_of_all_the_steps_a_decaying_schedule_takes():
    """sum_{i<N} eta_0 e^{-ik} over the endless sum, by direct summation (float64)."""
    k = 1e-4
    steps = torch.exp(-k * torch.arange(200_000, dtype=torch.float64))
    endless = 1 / (1 - math.exp(-k))
    for n in (1, 1000, 30_000, 70_000):
        assert to_target.budget_spent(n, k) == pytest.approx(steps[:n].sum().item() / endless, rel=1e-9)
    assert to_target.budget_spent(30_000, 0.0) == 0.0


def test_step_sum_is_the_sum_of_the_decayed_rates():
    k = 1e-4
    for n in (1, 1000, 70_000):
        direct = (2e-4 * torch.exp(-k * torch.arange(n, dtype=torch.float64))).sum().item()
        assert to_target.step_sum(2e-4, n, k) == pytest.approx(direct, rel=1e-9)
    assert to_target.step_sum(2e-4, 1000, 0.0) == pytest.approx(0.2)


def test_no_spread_reads_as_plus_or_minus_zero():
    from fglib.book.tables import mean_sd
    assert mean_sd([0.6912, 0.6914, 0.6908]) == "0.6911 ± 0.0003"       # a real spread, to its first digit
    assert mean_sd([2.0, 2.0, 2.0]) == "2.000, the same in every run"
    assert mean_sd([1.0, 2.0, 3.0]) == "2.000 ± 1.000"                  # the control: an ordinary spread
    assert mean_sd([float("nan")]) == "never within the run" and mean_sd([1.5]) == "1.500"


def test_the_committed_verdict_table_is_what_the_saved_results_give_now():
    """The verdict chapter's table, re-derived from the saved results (raw runs graded now by the
    grading module), equals the table the committed chapter shows: a rule changed without
    re-running the chapter, or results changed under it, fails here."""
    import json
    from conftest import ROOT
    table = verdict.to_markdown(verdict.judged(ROOT / "book" / "results")[2])
    cells = json.loads((ROOT / "book" / "verdict.ipynb").read_text())["cells"]
    shown = ["".join(o["data"]["text/markdown"]) for c in cells for o in c.get("outputs", [])
             if "text/markdown" in o.get("data", {}) and "| # | claim |" in "".join(o["data"]["text/markdown"])]
    assert len(shown) == 1 and shown[0].startswith(table + "\n"), \
        "the verdict chapter is stale: python tools/book.py execute --mode full verdict"
    control = table.replace("**holds**", "**does not hold**", 1)
    assert not shown[0].startswith(control + "\n")


def test_the_sweeps_comparison_is_derived_from_its_raw_runs_and_the_models_own_step_times(tmp_path, mnist):
    """lr_sweep.json keeps only the settings; the verdict derives T_f/T_b at each method's best
    rate from the saved sweep and the model's timing rounds, so changed rounds (the control)
    change S_f/S_b with no re-run of the sweep."""
    import json
    import numpy as np
    from fglib import load_data
    from fglib.book import report, runs, sweep
    from conftest import data_folder
    data = load_data("mnist", root=data_folder(), limit=500)
    curves, finals = sweep.lr_sweep("logreg", data, {"fg": [1e-3], "bp": [1e-1]}, runs=1, iterations=30, eval_points=5)
    sweep.save_sweep(tmp_path, "logreg", curves, finals)
    (tmp_path / "lr_sweep.json").write_text(json.dumps({"device": "CPU (test)", "runs": 1, "iterations": {"logreg": 30},
                                                         "targets": {"loss": [2.2]}}))

    def rounds(ratio):
        rng = np.random.default_rng(0)
        return pd.DataFrame([{"round": r, "name": n, "seconds": t * (1 + 0.01 * rng.standard_normal()), "disturbed": False}
                             for r in range(10) for n, t in (("base", 1e-3), ("backprop", 2e-3), ("forward gradient", 2e-3 * ratio))])
    for ratio in (2.0, 3.0):   # the second is the control
        path = tmp_path / "raw" / "logreg" / "timings.csv.gz"
        path.unlink(missing_ok=True)
        runs.save_timings(runs.PLANS["logreg"], tmp_path, rounds(ratio))
        row = verdict.with_raw(report.load_results(tmp_path), tmp_path)["lr_sweep"]["logreg"][0]
        assert row["S_f/S_b"] == pytest.approx(ratio, rel=0.02)


def test_a_sweeps_summary_counts_the_targets_and_says_which_were_never_reached():
    from fglib.book.sweep import summarise
    row = lambda target, t, note="": {"target": target, "T_f/T_b": t, "note": note}
    missed = "forward gradients did not reach it in 5,000 iterations: I_f/I_b > 47"
    three = [row("loss ≤ 1", 327.0), row("loss ≤ 0.5", 811.0), row("accuracy ≥ 80%", 465.0), row("accuracy ≥ 90%", math.nan, missed)]
    assert summarise(three, 20_000) == ("backprop reached 3 of the 4 targets 327 to 811 times sooner (T_f/T_b), and "
                                        "forward gradients did not reach accuracy ≥ 90% in 20,000 iterations")
    none = [row("loss ≤ 1", math.nan, missed), row("loss ≤ 0.5", math.nan, missed)]
    assert summarise(none, 5_000) == ("forward gradients reached none of the targets in 5,000 iterations "
                                      "(backprop reached every one)")
    won = [row("loss ≤ 1", 0.5), row("loss ≤ 0.5", 0.25)]   # the control: forward gradients first
    assert summarise(won, 100) == "forward gradients reached both targets 2.00 to 4.00 times sooner"


def test_the_sweep_per_target_says_each_factor_once_and_the_bound_a_missed_target_implies():
    """describe names S_f/S_b once for all targets reached, and turns each target forward
    gradients missed into the lower bound on I_f/I_b the run length implies (iterations / I_b)."""
    from fglib.book.sweep import describe
    nan = math.nan
    reached = {"T_f/T_b": 327.0, "±95%": 140.0, "I_f/I_b": 204.0, "S_f/S_b": 1.6, "I_b": 98.0, "note": ""}
    missed = {"T_f/T_b": nan, "±95%": nan, "I_f/I_b": nan, "S_f/S_b": 1.6, "I_b": 300.0,
              "note": "forward gradients did not reach it in 20,000 iterations: I_f/I_b > 66.7"}
    rows = [{**reached, "target": "loss ≤ 1"}, {**reached, "T_f/T_b": 811.0, "I_f/I_b": 507.0, "target": "loss ≤ 0.5"},
            {**missed, "target": "accuracy ≥ 90%"}]
    assert describe(rows, 20_000) == (
        "T_f/T_b = 327 to loss ≤ 1 and 811 to loss ≤ 0.5 (I_f/I_b 204 ± 140 and 507 ± 140, each × S_f/S_b 1.60); "
        "forward gradients did not reach accuracy ≥ 90% in 20,000 iterations, so I_f/I_b > 66")
    none = [{**missed, "target": "loss ≤ 1"}, {**missed, "I_b": 1000.0, "target": "loss ≤ 0.5"}]
    assert describe(none, 20_000) == ("forward gradients reached none of the 2 targets in 20,000 iterations, "
                                      "so I_f/I_b > 66 (loss ≤ 1) and > 20 (loss ≤ 0.5)")
    assert describe(none, 40_000).endswith("> 133 (loss ≤ 1) and > 40 (loss ≤ 0.5)")   # the bound grows with the run
    assert describe(none[:1], 600).endswith("so I_f/I_b > 2.0")   # exactly 2
    assert describe(none[:1], 800).endswith("so I_f/I_b > 2.6")   # 2.67, rounded down so that it still holds


def test_the_best_normal_step_ratio_names_its_model_and_engine_in_words():
    """The lowest normal-direction ratio, with the model and engine as a reader says them; Rademacher
    directions and backprop rows never count (the control: a lower Rademacher ratio is passed over)."""
    ratios = {"cnn / backprop": math.nan, "cnn / FG, fglib engine": 0.94, "cnn / FG, forward_ad": 0.97,
              "cnn / FG, fglib engine, Rademacher": 0.89, "mlp / FG, fglib engine, compiled": 2.08}
    assert verdict.best_normal_ratio({"implementations": {"R_f/R_b": ratios}}) == "0.94 (CNN, fglib's engine)"
    assert verdict.best_normal_ratio({}) is None


def test_every_missing_ratio_bar_says_why():
    """A T_f/T_b forward gradients never reached, one not judged yet, and one the paper gives
    in words only each get a note in place of their bar; a measured ratio gets none."""
    never = {**MNIST, "T_ratio": math.inf, "time_verdict": "does not hold"}
    waiting = {**MNIST, "time_verdict_why": "4 of the 5 planned pairs of runs have finished"}
    measured = {**MNIST, "T_ratio": 0.4, "time_verdict": "holds"}
    rows = verdict.ratio_comparison({"mnist": {"logistic regression": never, "CNN": waiting,
                                               "MLP, rate 2e-5": measured}})
    ours = rows[(rows.measure == "T_f/T_b") & (rows.source != "paper")].set_index("experiment")["note"]
    assert ours["logistic regression"] == "forward gradients never reached it"
    assert ours["CNN"] == "not judged yet: 4 of the 5 planned pairs of runs have finished"
    assert ours["MLP, rate 2e-5"] == ""
    paper = rows[(rows.measure == "T_f/T_b") & (rows.source == "paper")].set_index("experiment")["note"]
    assert paper["MLP, rate 2e-5"] == 'the paper: no number, "close to $R_f/R_b$"' and paper["CNN"] == ""
    assert (rows["note"] == "").eq(rows["value"].map(math.isfinite)).all()   # a note exactly where no bar


def test_a_cpu_speed_claim_that_held_on_one_model_reads_partly_not_unreproduced():
    """Claim 3 on a CPU: the CNN's step cheaper in every process, the MLP's dearer in every one. By the
    verdict's own word for 'some did', that is 'partly' (the reviewer's point 3); the control, no
    model cheaper, stays 'not reproduced on this CPU'."""
    cnn = {**MNIST, "ratio": 0.95, "runtime_verdict": "holds"}
    mixed = {"mnist": {"MLP": MNIST, "CNN": cnn}}
    assert verdict.claims_table(mixed).set_index("#").loc[3, "verdict"] == "partly"
    assert verdict.claims_table({"mnist": {"MLP": MNIST}}).set_index("#").loc[3, "verdict"] == verdict.NOT_ON_CPU
    assert verdict.speed_grade("partly", cpu=True) == "partly"
    assert verdict.speed_grade("does not hold", cpu=True) == verdict.NOT_ON_CPU


def test_a_diverged_test_function_run_is_reported_where_claim_two_is_graded():
    """The reviewer's point: one of 10 forward-gradient runs on Beale diverged at the paper's rate
    and the mean leaves it out; the claim-2 row says so. The control: with none diverged, it says nothing."""
    import pandas as pd
    from fglib.book import grading
    rows = [{"function": f, "method": m, "run": r, "iteration": i, "time": i * 1e-4, "split": "train",
             "loss": 1.0 / (1 + i), "diverged": bool(f == "beale" and m == "forward gradient" and r == 3)}
            for f in ("beale", "rosenbrock") for m in ("backprop", "forward gradient") for r in range(10)
            for i in (0, 10, 100, 1000, 20_000)]
    t = grading.function_numbers(pd.DataFrame(rows))
    assert t["diverged"] == {"beale": {"backprop": 0, "forward gradient": 1},
                             "rosenbrock": {"backprop": 0, "forward gradient": 0}}
    row = verdict.claims_table({"test_functions": t}).set_index("#").loc[2]
    assert "Beale: 1 of the 10 forward gradient runs diverged at the paper's rate" in row["ours"]
    calm = grading.function_numbers(pd.DataFrame(rows).assign(diverged=False))
    assert "diverged" not in verdict.claims_table({"test_functions": calm}).set_index("#").loc[2, "ours"]


def test_the_introductions_table_keeps_both_verdicts_first_and_links_every_claim():
    """The introduction's verdict table (HTML, glued across pages): the CPU and GPU verdicts come
    right after the claim, so that a phone shows both; our numbers are numbers, each claim links
    to the pages that hold them, and a claim with nothing run says so in its verdict."""
    results = {"mnist": {"MLP, rate 2e-5": MNIST}}
    table = verdict.claims_table(results)
    html = verdict.headline_html(results, table)
    header = re.findall(r"<th>([^<]+)</th>", html)
    assert header[:3] == ["claim", "CPU", "GPU"]
    rows = re.findall(r"<tr><td>(.*?)</td></tr>", html)
    assert len(rows) == 6 and all(f'href="{page}.html"' in rows[n - 1] for n, pages in verdict.WHERE.items()
                                  for page, _ in pages)
    assert "<strong>not reproduced on this CPU</strong></td><td>not run</td><td>MLP 1.8" in rows[2]
    assert f"<strong>{verdict.NOT_RUN}</strong>" in rows[0]   # nothing run for claim 1: said, not left blank


def test_claim_four_says_where_the_ratio_is_tied_to_the_run_length():
    """Where backprop's lowest mean loss is the run's last evaluation, T_b is the run's end and the
    ratio holds for that length only: the claim-4 row says so; the control (lowest earlier) does not."""
    ended = {**MNIST, "time_verdict": "holds", "T_ratio": 0.4, "I_ratio": 0.4, "bp_lowest_at_end": True}
    row = verdict.claims_table({"mnist": {"CNN": ended}}).set_index("#").loc[4, "ours"]
    assert "holds for this run length" in row
    earlier = {**ended, "bp_lowest_at_end": False}
    assert "run length" not in verdict.claims_table({"mnist": {"CNN": earlier}}).set_index("#").loc[4, "ours"]
