"""The grader: fabricated results (too short, levelled, noise-level difference) get the grades
the rules say, and the verdict table is generated from saved results."""
import math

import pandas as pd
import pytest
import torch

import fglib
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


FALLING = [2.3, 1.5, 1.0, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2]   # still 20% down in the last fifth
LEVELLED = [2.3, 1.0, 0.6, 0.45, 0.41, 0.40, 0.40, 0.40, 0.40, 0.40, 0.40]


CHANCE = math.log(10)


def grade(fg, bp, s_fg=1.0, s_bp=1.0, noise=0.0):
    c = curves(fg, bp, noise=noise)
    parts = to_target.decompose(c, s_fg, s_bp)
    ok, why = to_target.judgeable(c, CHANCE, 1000)
    return verdict.grade_time_to_target(parts, None if ok else why)


def test_too_short_is_not_judged_and_says_what_would_settle_it():
    word, why = grade(LEVELLED, FALLING)
    assert word == "not judged" and "run too short" in why and "fell" in why


def test_a_network_that_has_not_started_to_learn_is_not_judged():
    """A flat curve near chance level has 'levelled off' only in name: not judged, and says why."""
    stuck = [2.3026, 2.300, 2.298, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297]
    word, why = grade(stuck, stuck)
    assert word == "not judged" and "had not started to learn" in why


def test_levelled_and_clearly_faster_holds():
    fast = [2.3, 0.6, 0.4, 0.38, 0.38, 0.38, 0.38, 0.38, 0.38, 0.38, 0.38]  # reaches 0.40 at 200 vs 500
    word, _ = grade(fast, LEVELLED, s_fg=1.0, s_bp=1.0)
    assert word == "holds"


def test_the_step_cost_enters_the_product():
    fast = [2.3, 0.6, 0.4, 0.38, 0.38, 0.38, 0.38, 0.38, 0.38, 0.38, 0.38]
    word, why = grade(fast, LEVELLED, s_fg=5.0, s_bp=1.0)  # 0.4 x 5 = 2
    assert word == "does not hold" and "T_f/T_b = 2.00" in why


def test_noise_level_difference_is_not_judged():
    """The two methods reach the target at nearly the same iteration, runs scattered around
    parity: the 95% interval contains 1."""
    rows = []
    for r, hit in enumerate([4, 6, 5]):  # forward-gradient runs reach 0.40 at 400, 600, 500
        fg = [2.3] + [0.9] * (hit - 1) + [0.39] * (11 - hit)
        rows.append(curves(fg, LEVELLED, runs=1).assign(run=r))
    c = pd.concat(rows)
    parts = to_target.decompose(c, 1.0, 1.0)
    assert parts["I_ratio"] == [0.8, 1.2, 1.0]
    word, why = verdict.grade_time_to_target(parts)
    assert word == "not judged" and "contains 1" in why


def test_never_reached_does_not_hold_and_sometimes_is_partly():
    word, _ = grade([2.3] * 11, LEVELLED)
    assert word == "does not hold"
    rows = [curves([2.3] * 11, LEVELLED, runs=1).assign(run=0), curves(LEVELLED, LEVELLED, runs=1).assign(run=1)]
    c = pd.concat(rows)
    word, _ = verdict.grade_time_to_target(to_target.decompose(c, 1.0, 1.0))
    assert word == "partly"


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
    table = verdict.claims_table({"logreg": MNIST}).set_index("#")
    assert table.loc[3, "verdict"] == verdict.NOT_ON_CPU
    assert table.loc[3, "GPU"] == verdict.UNTESTED_GPU
    assert table.loc[4, "verdict"] == "not judged" and "run too short" in table.loc[4, "ours"]
    assert "engine fglib" in table.loc[3, "evidence"] and "5 × 2,000" in table.loc[4, "evidence"]
    gpu = {"logreg": {**MNIST, "ratio": 0.5, "runtime_verdict": "holds", "device": "H100"}}
    assert verdict.claims_table({"logreg": MNIST}, gpu).set_index("#").loc[3, "GPU"] == "holds"
    assert verdict.claims_table({}).set_index("#").loc[1, "GPU"] == verdict.DEVICE_FREE
    assert "](logreg.ipynb)" in verdict.to_markdown(table.reset_index())
    evidence = verdict.evidence_markdown(table.reset_index())  # each row's evidence and rule, listed
    assert "engine fglib" in evidence and "run too short" in evidence and "Rule: holds if R_f/R_b < 1" in evidence


def test_claim_two_is_graded_per_iteration_only():
    """Time per iteration on a two-parameter function is Python overhead on this device: shown
    beside the grade, never part of it. The control: iterations far apart do change the grade."""
    t = {"device": "cpu", "runs": 10, "levels": {"beale": 1e-3, "rosenbrock": 1e-2},
         "reach": {"beale": {"backprop": 556, "forward gradient": 547},
                   "rosenbrock": {"backprop": 9086, "forward gradient": 9095}},
         "backprop_over_fg_time_per_iteration": {"beale": 1.05, "rosenbrock": 0.44}}
    row = verdict.claims_table({"test_functions": t}).set_index("#").loc[2]
    assert row["verdict"] == "holds" and "not graded" in row["evidence"] and "rosenbrock 0.44" in row["evidence"]
    t["reach"]["rosenbrock"]["forward gradient"] = 30_000
    assert verdict.claims_table({"test_functions": t}).set_index("#").loc[2, "verdict"] == "partly"


def test_verdict_words():
    assert fglib.book.verdict.grade_ratios([0.5, 0.6]) == "holds"
    assert fglib.book.verdict.grade_ratios([0.5, 1.2]) == "partly"
    assert fglib.book.verdict.grade_ratios([1.5, 1.2]) == "does not hold"
    assert fglib.book.verdict.grade_ratios([0.5, float("nan")]) == "partly"
    assert fglib.book.verdict.grade_ratios([float("nan")]) == "does not hold"


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


def memory_results(fg_peaks, bp_peaks, batches=(64, 4096)):
    rows = []
    for b, f, p in zip(batches, fg_peaks, bp_peaks):
        rows += [{"batch size": b, "method": "forward gradient", "peak tensor memory (MiB)": f,
                  "saved for backward (MiB)": 0.0, "parameters (MiB)": 30.0},
                 {"batch size": b, "method": "backprop", "peak tensor memory (MiB)": p,
                  "saved for backward (MiB)": 2.0, "parameters (MiB)": 30.0}]
    return {"scaling": {"device": "CPU (test)", "memory": rows, "on_gpu": False, "memory_depth": 8}}


def test_memory_claim_is_graded_from_peak_tensor_memory_on_any_device():
    assert verdict.claim_memory(memory_results([30.1, 60.0], [30.0, 60.2]))["verdict"] == "holds"
    row = verdict.claim_memory(memory_results([31.5, 90.0], [30.0, 60.0]))
    assert row["verdict"] == "partly" and "+5.0% against backprop's at batch 64" in row["ours"]
    assert verdict.claim_memory(memory_results([45.0, 90.0], [30.0, 60.0]))["verdict"] == "does not hold"


def test_a_target_the_initial_model_already_meets_pairs_nothing():
    """A network that has not learned: backprop's best is within 1% of the start, so the
    target is met at iteration 0 and an iteration ratio would read 0. No pair counts."""
    stuck = [2.3026, 2.300, 2.298, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297]
    parts = to_target.decompose(curves(stuck, stuck), 1.0, 1.0)
    assert parts["runs"] == 0 and parts["runs_reached"] == 0 and math.isnan(parts["T_ratio"])


def test_no_comparable_pair_blanks_every_time_to_target_row():
    """When no pair of runs learned anything, neither the decomposed nor the wall-clock T_f/T_b
    is shown as a number."""
    import pandas as pd
    from fglib.book.tables import NO_PAIR, paper_vs_ours
    runtime = pd.DataFrame([{c: 1.0 for c in ["R_f", "R_f (forward_ad)", "R_b", "R_f/R_b", "R_f/R_b (forward_ad)",
                                              "peak_memory_fg", "peak_memory_bp", "saved_bytes_bp"]}])
    finals = pd.DataFrame([{"method": "backprop", "test_accuracy": 0.1}])
    numbers = {"I_ratio": float("nan"), "I_ratio_ci": float("nan"), "runs_reached": 0, "pairs": 0, "runs": 2,
               "T_ratio": float("nan"), "S_ratio": 1.1, "T_wall_ratio": 0.5}
    table = paper_vs_ours("cnn", None, finals, runtime, "CPU", numbers).set_index("measure").iloc[:, 1]
    assert (table.filter(like="T_f/T_b") == NO_PAIR).all() and (table.filter(like="I_f/I_b") == NO_PAIR).all()
    assert not table.index.str.contains("peak tensor").any()   # not measured: no row
    runtime = runtime.assign(peak_tensor_fg=2.0 ** 21, peak_tensor_bp=2.0 ** 20)
    table = paper_vs_ours("cnn", None, finals, runtime, "CPU", numbers).set_index("measure").iloc[:, 1]
    assert table["peak tensor memory of a step, forward gradient (MiB)"] == "2.00"


def test_the_count_of_grades_reads_as_a_sentence():
    table = pd.DataFrame({"verdict": ["holds", "partly", "partly", verdict.NOT_JUDGED, verdict.NOT_ON_CPU,
                                      verdict.NOT_ON_CPU]})
    assert verdict.count_sentence(table) == ("1 holds, 2 hold partly, 1 is not judged yet and "
                                             "2 are not reproduced on this CPU")
    assert verdict.count_sentence(table.iloc[:1]) == "1 holds"


def test_budget_spent_is_the_share_of_all_the_steps_a_decaying_schedule_takes():
    """sum_{i<N} eta_0 e^{-ik} over the endless sum, by direct summation (float64)."""
    k = 1e-4
    steps = torch.exp(-k * torch.arange(200_000, dtype=torch.float64))
    endless = 1 / (1 - math.exp(-k))
    for n in (1, 1000, 30_000, 70_000):
        assert to_target.budget_spent(n, k) == pytest.approx(steps[:n].sum().item() / endless, rel=1e-9)
    assert to_target.budget_spent(30_000, 0.0) == 0.0


def test_a_stuck_run_says_a_longer_one_would_not_help_only_when_the_decay_has_spent_its_budget():
    stuck = [2.3026, 2.300, 2.298, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297, 2.297]
    c = curves(stuck, stuck)
    _, spent = to_target.judgeable(c, CHANCE, 30_000, decay=1e-4)     # 95% of the steps taken
    _, early = to_target.judgeable(c, CHANCE, 1_000, decay=1e-4)      # 10% taken
    _, flat = to_target.judgeable(c, CHANCE, 30_000)                   # no decay given
    assert "a longer run would not settle it" in spent and "95%" in spent and "run too short" not in spent
    assert "longer run" not in early and "longer run" not in flat and early.startswith("run too short")


def test_a_longer_run_that_can_be_judged_grades_the_claim_in_place_of_a_short_one():
    short = {**MNIST, "lr": 2e-4, "iterations": 30_000, "time_verdict_why": "run too short: backprop still fell 8.6%"}
    long = {**MNIST, "lr": 2e-4, "iterations": 70_000, "time_verdict": "holds", "I_ratio": 0.3, "I_ratio_ci": 0.05,
            "T_ratio": 0.6, "runs_reached": 5, "time_verdict_why": "T_f/T_b = 0.60, 95% interval 0.5 to 0.7"}
    results = {"mlp": {"lr 0.0002": short}, "mlp_long": {"lr 0.0002, 70,000 iterations": long}}
    row = verdict.claim_time_to_loss(results)
    assert row["verdict"] == "holds" and "MLP, lr 0.0002: not judged, superseded by the longer run" in row["ours"]
    assert "30,000" in row["evidence"] and "70,000" in row["evidence"]
    # controls: a longer run that is itself too short, or one at another rate, replaces nothing
    still_short = {"mlp": {"lr 0.0002": short}, "mlp_long": {"lr 0.0002, 70,000 iterations": {**short, "iterations": 70_000}}}
    assert verdict.claim_time_to_loss(still_short)["verdict"] == "not judged"
    other_rate = {"mlp": {"lr 2e-05": {**short, "lr": 2e-5}}, "mlp_long": {"lr 0.0002, 70,000 iterations": long}}
    assert verdict.superseded(verdict.mnist_results(other_rate)) == {}
    assert verdict.claim_time_to_loss(other_rate)["verdict"] == "partly"


def test_an_unlearned_run_at_the_end_of_its_decay_says_a_longer_run_would_not_help():
    stuck = {**MNIST, "lr": 2e-5, "time_verdict_why": "run too short: backprop's best validation loss 2.188 is "
             "within 10% of the chance level 2.303 after 30,000 iterations, so the network had not started to learn"}
    spent = verdict.claim_time_to_loss({"mlp": {"lr 2e-05": {**stuck, "iterations": 30_000}}})["ours"]
    early = verdict.claim_time_to_loss({"mlp": {"lr 2e-05": {**stuck, "iterations": 2_000}}})["ours"]
    assert "a longer run would not settle it" in spent and "95%" in spent and "not gradable with this schedule" in spent
    assert "longer run" not in early and "run too short" in early


def test_a_longer_run_is_set_beside_the_paper_number_of_its_experiment():
    short = {**MNIST, "lr": 1e-4, "iterations": 30_000, "time_verdict_why": "run too short: backprop still fell 3.1%"}
    long = {**MNIST, "lr": 1e-4, "iterations": 60_000, "T_ratio": 1.5, "time_verdict": "does not hold",
            "time_verdict_why": "T_f/T_b = 1.50, 95% interval 1.2 to 1.8"}
    results = {"logreg": short, "logreg_long": {"lr 0.0001, 60,000 iterations": long}}
    assert verdict.superseded(verdict.mnist_results(results)) == {
        "logistic regression": "logistic regression, lr 0.0001, 60,000 iterations"}
    table = verdict.ratio_comparison(results)
    paper = table[(table.source == "paper") & (table.measure == "T_f/T_b")].set_index("experiment")["value"]
    assert paper["logistic regression, lr 0.0001, 60,000 iterations"] == paper["logistic regression"] == 0.553
    assert verdict.claim_time_to_loss(results)["verdict"] == "does not hold"


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


def test_pairs_reached_reads_as_a_sentence():
    from fglib.book.tables import NO_PAIR, pairs_reached
    assert pairs_reached(0, 5).startswith("in none of the 5 pairs did forward gradient come within 1%")
    assert pairs_reached(5, 5).startswith("in all 5 pairs forward gradient came") and pairs_reached(2, 2).startswith("in both")
    assert pairs_reached(3, 5).startswith("in 3 of 5 pairs") and pairs_reached(0, 0) == NO_PAIR
    assert not any("0 of 0" in pairs_reached(r, p) or "0/" in pairs_reached(r, p) for r, p in [(0, 0), (0, 5), (1, 1)])


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


def test_the_introductions_answer_is_built_from_the_results():
    """One row per claim with its verdict and a sentence carrying our number; the takeaways say
    whether the per-step speed-up appeared, and the control (steps cheaper) says the opposite."""
    slow = {"logreg": {**MNIST, "lr": 1e-4}}
    table = verdict.claims_table(slow)
    answer = verdict.findings_markdown(table)
    assert [line[:2] for line in answer.splitlines()] == ["1.", "2.", "3.", "4.", "5.", "6."]
    assert "not yet run on a GPU" in answer and "1.8 (logistic regression)" in answer
    assert "did not appear" in " ".join(verdict.takeaways(slow, table))
    fast = {"logreg": {**MNIST, "lr": 1e-4, "ratio": 0.5, "runtime_verdict": "holds"}}
    fast_table = verdict.claims_table(fast)
    fast_table.loc[fast_table["#"] == 3, "verdict"] = "holds"   # as on a GPU
    assert "appeared: a forward-gradient step cost 0.5" in " ".join(verdict.takeaways(fast, fast_table))
