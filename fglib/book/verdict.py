"""The six claims of the paper, judged from the results the chapters saved (results/*.json).

Each row: the claim, the paper's number, ours (with the device), the spread over runs,
a one-word verdict (holds / partly / does not hold, or 'not run yet'), and the chapter.
"""
import math

import pandas as pd

from .paper import DEPTH_BANDS, RESULTS

NOT_RUN = "not run yet"


def grade_ratios(ratios, threshold=1.0):
    """'holds' if every value is below the threshold, 'partly' if some are, else 'does not hold'.
    NaN (e.g. a target never reached) counts as not below."""
    below = [v < threshold for v in pd.Series(ratios, dtype=float)]  # NaN < x is False
    if below and all(below):
        return "holds"
    return "partly" if any(below) else "does not hold"


def _grade(flags):
    """'holds' if all flags are true, 'partly' if some are, 'does not hold' if none."""
    flags = list(flags)
    if not flags:
        return NOT_RUN
    return "holds" if all(flags) else ("partly" if any(flags) else "does not hold")


def mnist_results(results):
    """{experiment label: numbers} for the MNIST experiments that have results."""
    out = {}
    if "logreg" in results:
        out["logistic regression"] = results["logreg"]
    for key, numbers in results.get("mlp", {}).items():
        out[f"MLP, {key}"] = numbers
    if "cnn" in results:
        out["CNN"] = results["cnn"]
    return out


def claim_unbiased(r):
    u = r.get("unbiasedness")
    if not u:
        return ("Theorem 1: proof", NOT_RUN, "", NOT_RUN)
    ok = u["max_abs_z"] < 4.5 and u["max_second_moment_deviation_se"] < 4.5
    ours = (f"largest z-score of the mean {u['max_abs_z']:.2f} over {u['z_samples']:,} samples; "
            f"E‖g‖² = (n+2)‖∇f‖² within {u['max_second_moment_deviation_se']:.1f} SE up to n = {u['max_dim']:,}")
    spread = f"K-slope {min(u['slopes'].values()):.3f} to {max(u['slopes'].values()):.3f} (theory −0.5)"
    return ("Theorem 1: proof", ours + f" ({u['device']})", spread, "holds" if ok else "does not hold")


def claim_test_functions(r):
    t = r.get("test_functions")
    if not t:
        return ("alike in expectation (figure)", NOT_RUN, "", NOT_RUN)
    parts, flags = [], []
    for name, reach in t["reach"].items():
        fg, bp = reach.get("forward gradient", math.nan), reach.get("backprop", math.nan)
        ratio = fg / bp if bp else math.nan
        flags.append(0.67 <= ratio <= 1.5 if math.isfinite(ratio) else False)
        parts.append(f"{name}: FG/BP iterations to loss {t['levels'][name]:g} = {ratio:.2f}")
    speed = ", ".join(f"{k} {v:.2f}" for k, v in t["backprop_over_fg_time_per_iteration"].items())
    return ("alike in expectation; FG slightly faster per iteration",
            "; ".join(parts) + f" ({t['device']})", f"BP/FG time per iteration: {speed}", _grade(flags))


def claim_runtime(r):
    rows = mnist_results(r)
    if not rows:
        return ("R_f/R_b: 0.555 / 0.592 / 0.649", NOT_RUN, "", NOT_RUN)
    ours = "; ".join(f"{k} {v['ratio']:.2f}" for k, v in rows.items())
    spread = "sd over runs: " + "; ".join(f"{k} {v['ratio_sd']:.2f}" for k, v in rows.items())
    device = next(iter(rows.values()))["device"]
    return ("R_f/R_b: logreg 0.555, MLP 0.592, CNN 0.649", f"R_f/R_b: {ours} ({device})", spread,
            _grade(v["runtime_verdict"] == "holds" for v in rows.values()))


def claim_time_to_loss(r):
    rows = mnist_results(r)
    if not rows:
        return ("T_f/T_b: 0.553 / ≈R_f/R_b / 0.211 / 0.514", NOT_RUN, "", NOT_RUN)
    ours = "; ".join(f"{k} {v['T_text']}" for k, v in rows.items())
    spread = "; ".join(f"{k}: {v['runs_reached']}/{v['runs']} runs reached" for k, v in rows.items())
    device = next(iter(rows.values()))["device"]
    flags = [math.isfinite(v["T_ratio"]) and v["T_ratio"] < 1 for v in rows.values()]
    return ("T_f/T_b: logreg 0.553, MLP 0.211 (lr 2e-4), CNN 0.514", f"T_f/T_b: {ours} ({device})", spread,
            _grade(flags))


def claim_depth(r):
    s = r.get("scaling")
    if not s:
        return ("R_f/R_b < 0.6 to 10 layers, ≈0.8 at 100", NOT_RUN, "", NOT_RUN)
    ratios = {int(k): v for k, v in s["ratio_by_depth"].items()}
    sds = {int(k): v for k, v in s["ratio_sd_by_depth"].items()}
    deepest = max(ratios)
    ours = (f"R_f/R_b {min(ratios.values()):.2f} to {max(ratios.values()):.2f}; "
            f"{ratios[deepest]:.2f} at depth {deepest} ({s['device']})")
    spread = f"sd up to {max(v for v in sds.values() if math.isfinite(v)):.2f} over {s['runs']} runs"
    return ("R_f/R_b < 0.6 to 10 layers, ≈0.8 at 100", ours, spread, s["verdict"])


def claim_memory(r):
    s = r.get("scaling")
    if not s:
        return ("< 0.1% difference", NOT_RUN, "", NOT_RUN)
    mem = pd.DataFrame(s["memory"])
    bp = mem[mem["method"] == "backprop"].set_index("batch size")
    fg = mem[mem["method"] == "forward gradient"].set_index("batch size")
    b0, b1 = bp.index.min(), bp.index.max()
    if s["on_gpu"]:
        diff = 100 * (bp["peak memory (MiB)"] - fg["peak memory (MiB)"]) / bp["peak memory (MiB)"]
        ours = f"peak memory difference {diff[b0]:.2f}% at batch {b0}, {diff[b1]:.1f}% at batch {b1}"
        verdict = "holds" if abs(diff[b1]) < 0.1 else ("partly" if abs(diff[b0]) < 1 else "does not hold")
    else:
        share = bp["saved for backward (MiB)"] / bp["parameters (MiB)"]
        ours = (f"backprop stores activations of {100 * share[b0]:.1f}% of the weights' size at batch {b0}, "
                f"{100 * share[b1]:.0f}% at batch {b1}; forward gradient stores none (CPU: no peak measure)")
        verdict = "partly" if share[b0] < 0.1 else "does not hold"
    return ("< 0.1% difference (batch 64)", ours + f" ({s['device']})", "deterministic", verdict)


CLAIMS = [
    (1, "the forward gradient is unbiased", claim_unbiased, "unbiasedness"),
    (2, "FG and backprop behave alike on test functions", claim_test_functions, "test_functions"),
    (3, "R_f < R_b on every architecture", claim_runtime, "measuring"),
    (4, "T_f/T_b < 1 on MNIST", claim_time_to_loss, "logreg"),
    (5, "R_f/R_b < 1 as depth grows to 100", claim_depth, "scaling"),
    (6, "no memory difference", claim_memory, "scaling"),
]


def claims_table(results):
    """One row per claim, from the dict of saved chapter results."""
    rows = []
    for number, claim, judge, chapter in CLAIMS:
        paper, ours, spread, verdict = judge(results)
        rows.append({"#": number, "claim": claim, "paper": paper, "ours": ours, "spread": spread,
                     "verdict": verdict, "chapter": chapter})
    return pd.DataFrame(rows)


def to_markdown(table):
    """The table as MyST Markdown, each row linking to its chapter."""
    cols = ["#", "claim", "paper", "ours", "spread", "verdict"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for _, row in table.iterrows():
        cells = [str(row[c]).replace("|", "/") for c in cols]
        cells[1] = f"[{cells[1]}]({row['chapter']}.ipynb)"
        cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_comparison(results):
    """R_f/R_b and T_f/T_b, the paper's beside ours, one row per experiment and source."""
    paper_keys = {"logistic regression": "logreg", "MLP, lr 2e-05": "mlp, lr 2e-05",
                  "MLP, lr 0.0002": "mlp, lr 0.0002", "CNN": "cnn"}
    rows = []
    for label, numbers in mnist_results(results).items():
        paper = RESULTS.get(paper_keys.get(label, ""), {})
        for measure, ours in (("R_f/R_b", numbers["ratio"]), ("T_f/T_b", numbers["T_ratio"])):
            rows.append({"experiment": label, "measure": measure, "source": "paper", "value": paper.get(measure)})
            rows.append({"experiment": label, "measure": measure, "source": f"ours ({numbers['device']})",
                         "value": ours})
    return pd.DataFrame(rows, columns=["experiment", "measure", "source", "value"]).astype({"value": float})
