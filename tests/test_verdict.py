"""The verdict table is generated from saved results, and says so when a result is missing."""
import fglib
from fglib.book import verdict


def test_missing_results_say_not_run_yet():
    table = verdict.claims_table({})
    assert len(table) == 6 and (table["verdict"] == verdict.NOT_RUN).all()


def test_runtime_claim_follows_the_numbers():
    numbers = {"device": "cpu", "ratio": 1.8, "ratio_sd": 0.1, "runtime_verdict": "does not hold",
               "T_ratio": float("nan"), "T_text": "never within the run", "runs_reached": 0, "runs": 2}
    table = verdict.claims_table({"logreg": numbers, "cnn": {**numbers, "ratio": 0.5, "runtime_verdict": "holds",
                                                             "T_ratio": 0.4, "T_text": "0.400", "runs_reached": 2}})
    row3, row4 = table.set_index("#").loc[3], table.set_index("#").loc[4]
    assert row3["verdict"] == "partly" and "1.80" in row3["ours"] and "0.50" in row3["ours"]
    assert row4["verdict"] == "partly" and "never within the run" in row4["ours"]
    assert "](logreg.ipynb)" in verdict.to_markdown(table)


def test_verdict_words():
    assert fglib.book.verdict.grade_ratios([0.5, 0.6]) == "holds"
    assert fglib.book.verdict.grade_ratios([0.5, 1.2]) == "partly"
    assert fglib.book.verdict.grade_ratios([1.5, 1.2]) == "does not hold"
    assert fglib.book.verdict.grade_ratios([0.5, float("nan")]) == "partly"
    assert fglib.book.verdict.grade_ratios([float("nan")]) == "does not hold"
