"""The six claims of the paper, judged from the results the chapters saved (results/*.json).

Each row: the claim, the paper's number, ours (with the device), the spread over runs,
a one-word verdict (holds / partly / does not hold, or 'not run yet'), and the chapter.
"""
import math

import pandas as pd

from ..methods import PAPER_DECAY
from .paper import DEPTH_BANDS, IN_WORDS, MEMORY, RESULTS
from .report import listed

from .grading import (NOT_JUDGED, NOT_ON_CPU, NOT_RUN, UNBIASED_Z, _grade, alike, combine_grades, depth_costs,
                      depth_sentence, experiment_numbers, function_numbers, grade_depth, grade_memory, grade_unbiased, speed_grade, unbiased_numbers, whole_device,
                      step_times, BP, FG, MODEL_WORDS)


def mnist_results(results):
    """{experiment label: numbers} for the MNIST experiments that have raw results (with_raw)."""
    return results.get("mnist", {})


# experiment label: the plan (fglib.book.runs.PLANS) whose raw runs give it. To add an experiment:
# give it a plan, let its chapter save runs and timing rounds, and add it here.
RAW_EXPERIMENTS = {"logistic regression": "logreg", "MLP, rate 2e-5": "mlp", "MLP, rate 2e-4": "mlp_long",
                   "CNN": "cnn"}


def with_raw(results, folder="results"):
    """`results` with results["mnist"] = {label: numbers} for each experiment of RAW_EXPERIMENTS
    that has runs or step times, derived from them by the grading module now (nothing of it is
    stored graded), and results["memory"], claim 6's table over every network."""
    from .runs import PLANS, costs_experiment, load_memory, load_records, load_runs, load_table, load_timings
    out = dict(results)
    memory = load_memory(folder, "networks")
    if not memory.empty:
        out["memory"] = memory
    unbiased = [load_table(folder, "unbiasedness", name) for name in ("mc.csv.gz", "z.csv.gz", "moments.csv")]
    if not any(t.empty for t in unbiased):   # claim 1: the Monte Carlo tables, graded now
        out["unbiasedness"] = unbiased_numbers(*unbiased)
    curves = load_table(folder, "test_functions", "curves.csv.gz")
    if not curves.empty:   # claim 2: the test functions' raw curves, graded now
        out["test_functions"] = function_numbers(curves)
    rounds = load_table(folder, "scaling", "rounds.csv.gz")
    if not rounds.empty:   # claim 5: the depth sweep's timing rounds, graded now
        out["scaling"] = {"table": depth_costs(rounds), "device": rounds["device"].iloc[0],
                          "runs": int(rounds["run"].nunique()),
                          "subnormal": load_table(folder, "scaling", "subnormal.csv")}
        flushed = load_table(folder, "scaling", "rounds_flushed.csv.gz")
        if not flushed.empty:   # the deepest depths again, subnormals flushed to zero (one thread)
            out["scaling"]["flushed"] = depth_costs(flushed)
    sweep = out.get("lr_sweep", {})
    if "targets" in sweep:   # each method at its own rate: the sweep's raw runs, the models' own step times
        from .sweep import compare_at_best, load_sweep
        for model in sweep["iterations"]:
            (curves, finals), timings = load_sweep(folder, model), whole_device(load_timings(folder, model))
            if not curves.empty and not timings.empty:
                s = step_times(timings)
                sweep = {**sweep, model: compare_at_best(curves, finals, sweep["targets"], s[FG], s[BP],
                                                         sweep["iterations"][model]).to_dict("records")}
        out["lr_sweep"] = sweep
    from .implementations import step_ratios
    ratios = step_ratios(folder)
    if ratios:   # the implementations chapter's rounds, compared fastest against fastest now
        out["implementations"] = {**out.get("implementations", {}), "R_f/R_b": ratios}
    mnist = {}
    for label, name in RAW_EXPERIMENTS.items():
        plan = PLANS[name]
        runs, timings = load_runs(folder, plan.experiment), load_timings(folder, costs_experiment(plan))
        if runs.empty and timings.empty:
            continue
        mnist[label] = experiment_numbers(runs, timings, load_records(folder, plan.experiment), plan.iterations,
                                          PAPER_DECAY, plan.runs, plan.lr)
    if mnist:
        out["mnist"] = mnist
    return out


def judged(folder="results"):
    """(results, GPU results, the claims table) from a results folder and its gpu/ subfolder,
    raw runs graded now: what the verdict chapter, the introduction and their tests all read."""
    import os
    from .report import load_results
    gpu_folder = os.path.join(folder, "gpu")
    results = with_raw(load_results(folder), folder)
    gpu = with_raw(load_results(gpu_folder, missing_ok=True), gpu_folder)
    return results, gpu, claims_table(results, gpu)


UNTESTED_GPU = "untested on GPU"
DEVICE_FREE = "n/a (device-independent)"


def _row(paper, ours="", evidence="", verdict=NOT_RUN, rule="", short="no results yet"):
    """A claim's row; `short` is the one plain sentence the introduction shows."""
    return {"paper": paper, "ours": ours, "evidence": evidence, "verdict": verdict, "rule": rule, "short": short}


def claim_unbiased(r):
    u = r.get("unbiasedness")
    paper = "Theorem 1: proof"
    if not u or "max_abs_z" not in u:   # settings saved, raw tables not (yet)
        return _row(paper)
    low, high = (f"{x:.3f}" for x in (min(u["slopes"].values()), max(u["slopes"].values())))
    slopes = f"slope {low}" if low == high else f"slopes {low} to {high}"
    ours = (f"largest z-score of the mean {u['max_abs_z']:.2f} over {u['z_samples']:,} samples; "
            f"E‖g‖² = (n+2)‖∇f‖² within {u['max_second_moment_deviation_se']:.1f} SE up to n = {u['max_dim']:,}; "
            f"error of the mean falls with K at {slopes} (theory −0.5)")
    grade = grade_unbiased(u["max_abs_z"], u["max_second_moment_deviation_se"])
    short = (f"the mean of {u['z_samples']:,} forward gradients sat within {u['max_abs_z']:.1f} standard errors of "
             f"the true gradient in every test, and the variance grew with the dimension as the theory says"
             if grade == "holds" else
             f"the mean of {u['z_samples']:,} forward gradients sat up to {u['max_abs_z']:.1f} standard errors from the "
             f"true gradient, and the second moment up to {u['max_second_moment_deviation_se']:.1f} from its formula "
             f"(the rule allows {UNBIASED_Z} for each)")
    return _row(paper, ours, f"{u['device']}; Monte Carlo with fixed seeds", grade,
                f"holds if every |z| < {UNBIASED_Z} and the second moment is within {UNBIASED_Z} SE", short)


def claim_test_functions(r):
    t = r.get("test_functions")
    paper = "alike per iteration in expectation (the paper's FG was also slightly faster in time)"
    if not t or "reach" not in t:   # settings saved, raw curves not (yet)
        return _row(paper)
    parts, similar, timing, said = [], [], [], []
    speed = t["backprop_over_fg_time_per_iteration"]
    for key, reach in t["reach"].items():
        level, name = f"{t['levels'][key]:g}", key.capitalize()   # Beale, as the paper names it
        key_speed = speed.get(key, math.nan)
        fg, bp = reach.get(FG, math.nan), reach.get(BP, math.nan)
        timing.append(f"{name} {key_speed:.2f}")
        if not math.isfinite(bp):   # backprop never got there: the run cannot tell
            parts.append(f"{name}: backprop did not reach loss {level} within the run")
            said.append(f"on {name} backprop did not reach loss {level} within the run")
        elif not math.isfinite(fg):
            similar.append(False)
            parts.append(f"{name}: forward gradient did not reach loss {level} within the run")
            said.append(f"on {name} forward gradient did not reach loss {level} within the run")
        else:
            similar.append(alike(fg / bp))
            parts.append(f"{name}: FG/BP iterations to loss {level} = {fg / bp:.2f}")
            said.append(f"{name} {fg / bp:.2f}")
    for key, counts in t.get("diverged", {}).items():   # a diverged run is left out of the reach: say so
        for method, n in counts.items():
            if n:
                parts.append(f"{key.capitalize()}: {n} of the {t['runs']} {method} runs diverged at the paper's rate "
                             "and are left out of the mean")
    evidence = (f"{t['device']}; {t['runs']} runs per method. BP/FG time per iteration, not graded (on a "
                f"two-parameter function it measures this device's Python overhead): {', '.join(timing)}")
    grade = _grade(similar) if similar else NOT_JUDGED
    short = ("forward gradient needed about as many iterations as gradient descent to reach the same loss "
             f"(FG/BP: {', '.join(said)})" if grade == "holds" else
             f"FG/BP iterations to each function's loss level: {'; '.join(said)}")
    return _row(paper, "; ".join(parts), evidence, grade,
                "graded per iteration only: FG/BP iterations to the loss level within 0.67–1.5 on each function", short)


def claim_runtime(r, cpu=True):
    rows = {k: v for k, v in mnist_results(r).items() if math.isfinite(v.get("ratio", math.nan))}
    paper = "R_f/R_b: logreg 0.555, MLP 0.592, CNN 0.649"
    if not rows:
        return _row(paper)
    models, by_model = {}, {}   # the MLP's two rates share one set of step times: one entry per model
    for k, v in rows.items():
        models.setdefault(k.split(",")[0], v)
        by_model.setdefault(k.split(",")[0], []).append(v["ratio"])
    ours = "; ".join(f"{model}: {v['ratio']:.2f} ± {v['ratio_sd']:.2f}"
                     + (f" (forward_ad {v['ratio_forward_ad']:.2f})" if "ratio_forward_ad" in v else "")
                     for model, v in models.items())
    device = next(iter(rows.values()))["device"]
    engine = next(iter(rows.values())).get("engine", "forward_ad")
    grade = _grade(v["runtime_verdict"] == "holds" for v in rows.values())
    grade = speed_grade(grade, cpu)
    processes = sorted({v.get("processes", 0) for v in models.values()})
    timed = (f"{processes[0]} separate timing processes per model, ± the sd between them" if len(processes) == 1
             else "separate timing processes per model, ± the sd between them")
    spans = [f"{min(r):.2g}" + (f"–{max(r):.2g}" if f"{max(r):.2g}" != f"{min(r):.2g}" else "") + f" ({m})"
             for m, r in by_model.items()]
    short = f"a forward-gradient step cost {listed(spans)} times a backprop step on {device}, against 0.56–0.65 in the paper, on a GPU"
    return _row(paper, ours, f"{device}; engine {engine}; {timed}", grade,
                "holds if R_f/R_b < 1 in every experiment (median over interleaved repeats)", short)


def claim_time_to_loss(r, cpu=True):
    rows = mnist_results(r)
    paper = "T_f/T_b: logreg 0.553, MLP 0.211 (rate 2e-4), CNN 0.514"
    if not rows:
        return _row(paper)
    parts, short = [], []
    for k, v in rows.items():
        factors = (f" (I_f/I_b {v['I_ratio']:#.2g} × S_f/S_b {v['S_ratio']:#.2g})" if math.isfinite(v["T_ratio"]) else "")
        why = v["time_verdict_why"]
        length = (" Backprop's lowest mean loss is the run's last evaluation, so T_f/T_b holds for this run length; "
                  "its chapter shows it against run length." if v.get("bp_lowest_at_end") else "")
        parts.append(f"{k}: {v['time_verdict']}{factors}. {why[:1].upper()}{why[1:]}.{length}".replace("..", "."))
        short.append(f"{k}: {v['time_verdict']}"
                     + (f" (T_f/T_b {v['T_ratio']:.2g})" if math.isfinite(v["T_ratio"]) else
                        f" ({v['time_verdict_why'].split(';')[0]})" if v["time_verdict"] == NOT_JUDGED else ""))
    device = next(iter(rows.values()))["device"]
    runs = "; ".join(f"{k}: {v['runs']} × {v['iterations']:,}" for k, v in rows.items())
    return _row(paper, "\n".join(parts), f"{device}; pairs × iterations {runs}",   # one line per experiment
                combine_grades(v["time_verdict"] for v in rows.values()),
                "per experiment, the paper's measure on the mean curves (the iteration a curve reaches a loss "
                "interpolated between the two evaluations around it): not judged until every planned pair has "
                "run, backprop has learned (test accuracy above chance) and its mean validation loss has levelled "
                "off (< 1% fall over the last fifth) or the decay has frozen it (the rest of the schedule would "
                "lower it by < 1%), or when the 95% interval of T_f/T_b contains 1; on a CPU, a ratio that fails only by the "
                "device's factor (I_f/I_b ≤ 1 but S_f/S_b > 1) reads 'not reproduced on this CPU', as claims 3 and 5 do", "; ".join(short))


def claim_depth(r, cpu=True):
    s = r.get("scaling")
    paper = "R_f/R_b < 0.6 to 10 layers, ≈0.8 at 100"
    if not s or "table" not in s:
        return _row(paper)
    table = s["table"]
    deepest = table.iloc[-1]
    flushed = s.get("flushed")
    deep = int(deepest["depth"])
    flushed_there = (f" ({flushed.set_index('depth')['R_f/R_b'][deep]:.2f} with subnormals flushed to zero, one thread)"
                     if flushed is not None and len(flushed) and deep in set(flushed["depth"]) else "")
    ours = (f"R_f/R_b {table['R_f/R_b'].min():.2f} to {table['R_f/R_b'].max():.2f}; {deepest['R_f/R_b']:.2f} at depth "
            f"{deep}{flushed_there}; sd between runs up to {table['sd between runs'].max():.2f}")
    grade = grade_depth(table)
    grade = speed_grade(grade, cpu)
    return _row(paper, ours, f"{s['device']}; engine fglib; {s['runs']} runs per depth (fresh weights and batch)",
                grade, "holds if R_f/R_b < 1 at every depth", depth_sentence(table, s["device"], s.get("subnormal"), s.get("flushed")))


def claim_memory(r, cpu=True):
    paper = "< 0.1% difference (batch 64)"
    if "memory" not in r:
        return _row(paper)
    table = r["memory"]   # every network the paper ran, at batch 64, in the paper's sense
    word, sentence = grade_memory(table)
    return _row(paper, sentence, f"{table['device'].iloc[0]}; everything alive at the step's peak, weights "
                "included, as the allocator counts it (a buffer freed during the step stops counting then)", word,
                "holds if the two differ by < 0.1% (the paper's figure) on every network, partly if on some",
                sentence)


CLAIMS = [
    (1, "the forward gradient is unbiased", claim_unbiased, "unbiasedness", False),
    (2, "FG and backprop behave alike on test functions", claim_test_functions, "test_functions", False),
    (3, "$R_f < R_b$ on every architecture", claim_runtime, "measuring", True),
    (4, "$T_f/T_b < 1$ on MNIST", claim_time_to_loss, "logreg", True),
    (5, "$R_f/R_b < 1$ as depth grows to 100", claim_depth, "scaling", True),
    (6, "no memory difference", claim_memory, "scaling", True),
]


def claims_table(results, gpu_results=None):
    """One row per claim, from the dict of saved CPU results, with a GPU column from the GPU
    results ('untested on GPU' where there are none)."""
    rows = []
    for number, claim, judge, chapter, on_device in CLAIMS:
        row = judge(results, cpu=True) if on_device else judge(results)
        if not on_device:
            gpu = DEVICE_FREE
        elif gpu_results and judge(gpu_results, cpu=False)["verdict"] != NOT_RUN:
            gpu = judge(gpu_results, cpu=False)["verdict"]
        else:
            gpu = UNTESTED_GPU
        rows.append({"#": number, "claim": claim, **row, "GPU": gpu, "chapter": chapter})
    return pd.DataFrame(rows)


def to_markdown(table):
    """The verdicts at a glance, as MyST Markdown: one short row per claim, linking to its chapter.
    What each verdict rests on is listed under it by `evidence_markdown`."""
    cols = ["#", "claim", "paper", "verdict", "GPU"]
    names = {"verdict": "verdict (CPU)", "GPU": "verdict (GPU)"}
    lines = ["| " + " | ".join(names.get(c, c) for c in cols) + " |", "|" + " --- |" * len(cols)]
    for _, row in table.iterrows():
        cells = [str(row[c]).replace("|", "/") for c in cols]
        cells[1] = f"[{cells[1]}]({row['chapter']}.ipynb)"
        cells[3] = f"**{cells[3]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Where each claim's numbers and verdict are: its chapters, as (page, label).
WHERE = {1: [("unbiasedness", "unbiasedness")], 2: [("test_functions", "test functions")],
         3: [("logreg", "logistic regression"), ("mlp", "MLP"), ("cnn", "CNN"), ("implementations", "engines")],
         4: [("logreg", "logistic regression"), ("mlp", "MLP 2e-5"), ("mlp_long", "MLP 2e-4"), ("cnn", "CNN")],
         5: [("scaling", "depth")], 6: [("scaling", "memory"), ("verdict", "every network")]}
PAPER_KEYS = {"logreg": "logreg", "MLP 2e-5": "mlp, lr 2e-05", "MLP 2e-4": "mlp, lr 0.0002", "CNN": "cnn"}
SHORT_LABELS = {"logistic regression": "logreg", "MLP, rate 2e-5": "MLP 2e-5", "MLP, rate 2e-4": "MLP 2e-4",
                "CNN": "CNN"}


def _ratio(x):
    return "never" if not math.isfinite(x) else f"{x:.2g}"


def headline_numbers(results):
    """Each claim's headline number as a table cell (our number, then the paper's): numbers only,
    labelled by experiment; '' where nothing has run."""
    ours, paper = {}, {}
    u = results.get("unbiasedness", {})
    if "max_abs_z" in u:
        ours[1], paper[1] = f"largest z-score {u['max_abs_z']:.1f}", "a proof"
    t = results.get("test_functions", {})
    if "reach" in t:
        said = [f"{k.capitalize()} {r[FG] / r[BP]:.2f}" for k, r in t["reach"].items() if FG in r and BP in r]
        ours[2], paper[2] = "FG/BP iterations: " + ", ".join(said), "alike"
    rows = mnist_results(results)
    models = {}
    for label, v in rows.items():
        models.setdefault(label.split(",")[0], v)
    if models:
        ours[3] = "; ".join(f"{SHORT_LABELS.get(m, m)} {v['ratio']:.2g}" for m, v in models.items()
                            if math.isfinite(v.get("ratio", math.nan)))
        paper[3] = "; ".join(f"{name} {RESULTS[key]['R_f/R_b']:.2g}" for name, key in PAPER_KEYS.items()
                             if name != "MLP 2e-4").replace("MLP 2e-5", "MLP")
        ours[4] = "; ".join(f"{SHORT_LABELS.get(k, k)} {_ratio(v['T_ratio'])}" for k, v in rows.items())
        paper[4] = "; ".join(f"{name} {RESULTS[key]['T_f/T_b']:.2g}" for name, key in PAPER_KEYS.items()
                             if RESULTS[key]["T_f/T_b"] is not None)
    s = results.get("scaling", {})
    if "table" in s:
        r = s["table"]["R_f/R_b"]
        ours[5] = f"{r.min():.2f} to {r.max():.2f}"
        paper[5] = (f"under {DEPTH_BANDS['R_f/R_b up to 10 layers']} to 10 layers; "
                    f"about {DEPTH_BANDS['R_f/R_b at 100 layers']} at 100")
    if "memory" in results:
        d = grading_memory_ratio(results["memory"])
        ours[6], paper[6] = f"FG/BP {d.min():.2f} to {d.max():.2f}", MEMORY
    return ours, paper


def grading_memory_ratio(table):
    """Forward gradient's step memory over backprop's, per network."""
    from .grading import memory_differences
    return memory_differences(table)["FG vs BP"] + 1


def headline_html(results, table):
    """The introduction's verdict table: each claim with its verdict on this CPU and on a GPU
    (first, so that both stay in view on a phone), our number and the paper's, and the pages that
    hold them. HTML, since a glue reference across pages renders HTML, not Markdown: links to the
    pages' .html, the symbols typeset by MathJax, styled as the book's tables."""
    import html
    import re
    ours, paper = headline_numbers(results)
    head = "".join(f"<th>{h}</th>" for h in ("claim", "CPU", "GPU", "ours", "paper", "where"))
    rows = []
    for _, row in table.iterrows():
        n = row["#"]
        claim = html.escape(row["claim"], quote=False)
        claim = re.sub(r"\$([^$]+)\$", lambda m: f"\\({m.group(1)}\\)", claim)   # inline maths for MathJax
        where = ", ".join(f'<a href="{page}.html">{label}</a>' for page, label in WHERE[n])
        gpu = "–" if row["GPU"] == DEVICE_FREE else row["GPU"].replace("untested on GPU", "not run")
        cells = [f"{n}. {claim}", f"<strong>{row['verdict']}</strong>", gpu, html.escape(ours.get(n, "")),
                 html.escape(paper.get(n, "")), where]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<div class="mathjax_process pst-scrollable-table-container"><table class="table">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def evidence_markdown(table):
    """Per claim, as a numbered list: what we measured (a nested list when it has one line per
    experiment), the evidence behind it (device, engine, runs, iterations) and the rule that
    produced the grade."""
    end = lambda text: str(text).rstrip(".") + "."
    items = []
    for _, row in table.iterrows():
        lines = str(row["ours"]).split("\n")
        ours = (end(lines[0]) + " " if len(lines) == 1 else
                "\n" + "\n".join(f"   - {end(line)}" for line in lines) + "\n\n   ")
        text = f"{row['#']}. **{row['claim']}** ({row['verdict']}). Ours: {ours}Evidence: {end(row['evidence'])}"
        if row["rule"]:
            text += f" Rule: {end(row['rule'])}"
        items.append(text)
    return "\n".join(items)


def best_normal_ratio(results):
    """The lowest forward-gradient / backprop step ratio the implementations chapter measured with
    normal directions (any engine, eager or compiled), as text, or None before it has run."""
    ratios = results.get("implementations", {}).get("R_f/R_b", {})
    normal = {k: v for k, v in ratios.items() if "Rademacher" not in k and "FG" in k and v == v}
    if not normal:
        return None
    key = min(normal, key=normal.get)
    model, _, variant = key.partition(" / ")
    engine = variant.removeprefix("FG, ").replace("fglib engine", "fglib's engine")
    return f"{normal[key]:.2f} ({MODEL_WORDS.get(model, model)}, {engine})"


def ratio_comparison(results):
    """R_f/R_b and T_f/T_b, the paper's beside ours, one row per experiment and source; `note`
    says why a value is missing (the figure writes it where the bar would be)."""
    paper_keys = {"logistic regression": "logreg", "MLP, rate 2e-5": "mlp, lr 2e-05",
                  "MLP, rate 2e-4": "mlp, lr 0.0002", "CNN": "cnn"}
    rows = []
    for label, numbers in mnist_results(results).items():
        paper = RESULTS.get(paper_keys.get(label, ""), {})
        for measure, ours in (("R_f/R_b", numbers["ratio"]), ("T_f/T_b", numbers["T_ratio"])):
            theirs = paper.get(measure)
            rows.append({"experiment": label, "measure": measure, "source": "paper", "value": theirs,
                         "note": "" if theirs is not None else _paper_words(paper_keys.get(label), measure)})
            rows.append({"experiment": label, "measure": measure, "source": f"ours ({numbers['device']})",
                         "value": ours, "note": _why_no_value(ours, numbers)})
    columns = ["experiment", "measure", "source", "value", "note"]
    return pd.DataFrame(rows, columns=columns).astype({"value": float})


def _paper_words(experiment, measure):
    """Where the paper gives no number: its words, if it gives any (paper.IN_WORDS)."""
    words = IN_WORDS.get((experiment, measure))
    return f'the paper: no number, "{words}"' if words else "the paper gives none"


def _why_no_value(value, numbers):
    """'' for a finite ratio; else why there is none: forward gradients never reached the
    loss (an infinite T_f/T_b), or the comparison is not judged yet (and why)."""
    if value is not None and math.isfinite(value):
        return ""
    if value is not None and math.isinf(value):
        return "forward gradients never reached it"
    if numbers.get("time_verdict") == NOT_JUDGED:
        return f"not judged yet: {numbers.get('time_verdict_why', '')}".rstrip(": ")
    return "not measured"
