"""The six claims of the paper, judged from the results the chapters saved (results/*.json).

Each row: the claim, the paper's number, a one-word verdict (holds / partly / does not hold, or
'not run yet'), the numbers the verdict rests on, and the chapter. The words are the verdict
chapter's, written in its markdown.
"""
import math

import pandas as pd

from ..methods import PAPER_DECAY
from .paper import DEPTH_BANDS, IN_WORDS, MEMORY, RESULTS
# NOT_ON_CPU is re-exported: the verdict words live in grading
from .grading import (BP, FG, MEMORY_SAME, MODEL_WORDS, NOT_JUDGED, NOT_ON_CPU, NOT_RUN, UNBIASED_Z, _grade, alike,
                      combine_grades, depth_costs, experiment_numbers, function_numbers, grade_memory, grade_ratios,
                      grade_unbiased, speed_grade, step_times, unbiased_numbers, whole_device)
from .grading import graded_depths as _graded_depths


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


def _row(paper, verdict=NOT_RUN, **numbers):
    """A claim's row: the paper's number (a table cell), our grade and the numbers it rests on."""
    return {"paper": paper, "verdict": verdict, "numbers": numbers}


def claim_unbiased(r):
    """Claim 1 from the unbiasedness chapter's Monte Carlo: the largest |z| of the mean, the
    second moment's largest deviation from (n+2)||grad||^2 in standard errors, and the slopes of
    the error of the mean against K (theory -0.5)."""
    u = r.get("unbiasedness")
    paper = "Theorem 1: proof"
    if not u or "max_abs_z" not in u:   # settings saved, raw tables not (yet)
        return _row(paper)
    grade = grade_unbiased(u["max_abs_z"], u["max_second_moment_deviation_se"])
    return _row(paper, grade, max_abs_z=u["max_abs_z"], samples=u["z_samples"],
                moment_se=u["max_second_moment_deviation_se"], max_dim=u["max_dim"], bar=UNBIASED_Z,
                slope_low=min(u["slopes"].values()), slope_high=max(u["slopes"].values()), device=u["device"])


def claim_test_functions(r):
    """Claim 2 from the test functions' curves: per function, forward gradient's iterations to the
    loss level over backprop's (NaN where one never reached it; graded alike within ALIKE), the
    runs that diverged, and backprop's time per iteration over forward gradient's (not graded)."""
    t = r.get("test_functions")
    paper = "alike per iteration in expectation (the paper's FG was also slightly faster in time)"
    if not t or "reach" not in t:   # settings saved, raw curves not (yet)
        return _row(paper)
    ratios, similar = {}, []
    for key, reach in t["reach"].items():
        fg, bp = reach.get(FG, math.nan), reach.get(BP, math.nan)
        ratios[key] = fg / bp if math.isfinite(fg) and math.isfinite(bp) else math.nan
        if math.isfinite(bp):   # backprop never got there: the run cannot tell
            similar.append(alike(ratios[key]))
    grade = _grade(similar) if similar else NOT_JUDGED
    return _row(paper, grade, ratios=ratios, levels=dict(t["levels"]), runs=t["runs"],
                diverged={k: dict(v) for k, v in t.get("diverged", {}).items()},
                bp_over_fg_time=dict(t["backprop_over_fg_time_per_iteration"]), device=t["device"])


def claim_runtime(r, cpu=True):
    """Claim 3 from each model's step times: S_f/S_b per model (the MLP's two rates share one set
    of step times) with its sd between processes; holds if below 1 in every experiment."""
    rows = {k: v for k, v in mnist_results(r).items() if math.isfinite(v.get("ratio", math.nan))}
    paper = "$R_f/R_b$: " + ", ".join(f"{name} {RESULTS[key]['R_f/R_b']:.3g}" for name, key in
                                      (("logistic regression", "logreg"), ("MLP", "mlp, lr 2e-05"), ("CNN", "cnn")))
    if not rows:
        return _row(paper)
    models = {}
    for k, v in rows.items():
        models.setdefault(k.split(",")[0], v)
    grade = speed_grade(_grade(v["runtime_verdict"] == "holds" for v in rows.values()), cpu)
    first = next(iter(rows.values()))
    return _row(paper, grade, ratio={m: v["ratio"] for m, v in models.items()},
                sd={m: v["ratio_sd"] for m, v in models.items()},
                processes=min(v.get("processes", 0) for v in models.values()),
                device=first["device"], engine=first.get("engine", "forward_ad"))


def claim_time_to_loss(r, cpu=True):
    """Claim 4 over the MNIST experiments: the grades combined (claim4_table has each one's)."""
    rows = mnist_results(r)
    paper = "$T_f/T_b$: " + ", ".join(f"{name} {RESULTS[key]['T_f/T_b']:.3g}{rate}" for name, key, rate in
                                      (("logistic regression", "logreg", ""), ("MLP", "mlp, lr 0.0002", " (rate 2e-4)"),
                                       ("CNN", "cnn", "")))   # the paper gives the MLP's at one rate only
    if not rows:
        return _row(paper)
    return _row(paper, combine_grades(v["time_verdict"] for v in rows.values()),
                device=next(iter(rows.values()))["device"])


def claim4_table(results):
    """Claim 4 per MNIST experiment, as a table: the grade, T_f/T_b with its 95% interval (an
    open upper end is inf: in some resamples forward gradients never reached the loss), its two
    factors, the pairs of runs and their length, and whether backprop's lowest mean loss is the
    run's last evaluation (then the ratio holds for this run length)."""
    rows = []
    for label, v in mnist_results(results).items():
        rows.append({"experiment": label, "verdict": v["time_verdict"], "T_f/T_b": v["T_ratio"],
                     "95% low": v.get("T_low", math.nan), "95% high": v.get("T_high", math.nan),
                     "I_f/I_b": v["I_ratio"], "S_f/S_b": v["S_ratio"], "pairs": v["pairs"],
                     "iterations": v["iterations"], "decay spent": v.get("decay_spent", math.nan),
                     "lowest at the end": "yes" if v.get("bp_lowest_at_end") else "no"})
    return pd.DataFrame(rows, columns=["experiment", "verdict", "T_f/T_b", "95% low", "95% high", "I_f/I_b", "S_f/S_b", "pairs",
                                       "iterations", "decay spent", "lowest at the end"])


def graded_depths(s):
    """grading.graded_depths of the depth sweep's saved numbers: the subnormal check counts on a
    CPU only (a GPU computes subnormal numbers at full speed)."""
    on_cpu = str(s["device"]).startswith("CPU")
    return _graded_depths(s["table"], s.get("subnormal") if on_cpu else None, s.get("flushed"))


def claim_depth(r, cpu=True):
    """Claim 5 from the depth sweep: holds if R_f/R_b < 1 at every depth, as graded_depths counts
    them; the numbers are depth_numbers'."""
    s = r.get("scaling")
    paper = "$R_f/R_b < 0.6$ up to 10 layers, ≈0.8 at 100"
    if not s or "table" not in s:
        return _row(paper)
    ratios, numbers = graded_depths(s)
    grade = speed_grade(grade_ratios(ratios), cpu)   # grading.grade_depth's rule, with its numbers kept
    return _row(paper, grade, runs=s["runs"], device=s["device"], **numbers)


def claim_memory(r, cpu=True):
    """Claim 6 over every network the paper ran, at batch 64, in the paper's sense: forward
    gradient's step memory over backprop's, lowest and highest, and the networks."""
    paper = "< 0.1% difference (batch 64)"
    if "memory" not in r:
        return _row(paper)
    table = r["memory"]
    ratio = grading_memory_ratio(table)
    lean = grading_memory_ratio(table, "FG in place vs BP")
    lean_numbers = {} if lean is None else dict(lean_low=float(lean.min()), lean_high=float(lean.max()),
                                                lean_low_at=lean.idxmin(), lean_high_at=lean.idxmax())
    within = [name for name, r in ratio.items() if abs(r - 1) < MEMORY_SAME]   # the rule's 'same', per network
    return _row(paper, grade_memory(table), low=float(ratio.min()), high=float(ratio.max()),
                low_at=ratio.idxmin(), high_at=ratio.idxmax(), networks=len(ratio), device=table["device"].iloc[0],
                within=within, **lean_numbers)


CLAIMS = [
    (1, "the forward gradient is unbiased", claim_unbiased, "unbiasedness", False),
    (2, "forward gradients and backprop behave alike on test functions", claim_test_functions, "test_functions", False),
    (3, "$R_f < R_b$ on every architecture", claim_runtime, "implementations", True),
    (4, "$T_f/T_b < 1$ on MNIST, at the paper's rate", claim_time_to_loss, "mlp_long", True),
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
    """The verdicts at a glance, as MyST Markdown: one short row per claim, its number linking to the
    claim's paragraph below (label claim-N, which gives the evidence and links the chapters), the
    verdict on this CPU and on a GPU beside the claim (so that both stay in view on a phone), then
    the paper's number."""
    lines = ["| # | claim | CPU | GPU | paper |", "| --- | --- | --- | --- | --- |"]
    for _, row in table.iterrows():
        gpu = "–" if row["GPU"] == DEVICE_FREE else row["GPU"].replace(UNTESTED_GPU, "not run")
        cells = [f"{{ref}}`{row['#']} <claim-{row['#']}>`", row["claim"], f"**{row['verdict']}**", gpu,
                 str(row["paper"])]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


# Where each claim's numbers and verdict are: its chapters, as (page, label).
WHERE = {1: [("unbiasedness", "unbiasedness")], 2: [("test_functions", "test functions")],
         3: [("logreg", "logistic regression"), ("mlp", "MLP"), ("cnn", "CNN"), ("implementations", "engines")],
         4: [("logreg", "logistic regression"), ("mlp", "MLP 2e-5"), ("mlp_long", "MLP 2e-4"), ("cnn", "CNN")],
         5: [("scaling", "depth")], 6: [("scaling", "memory"), ("verdict#verdict-memory", "every network")]}

PAPER_KEYS = {"logistic regression": "logreg", "MLP, rate 2e-5": "mlp, lr 2e-05", "MLP, rate 2e-4": "mlp, lr 0.0002",
              "CNN": "cnn"}


def _href(page):
    """'verdict#verdict-memory' -> 'verdict.html#verdict-memory'; 'scaling' -> 'scaling.html'."""
    name, _, anchor = page.partition("#")
    return f"{name}.html" + (f"#{anchor}" if anchor else "")


def _ratio(x):
    return "never" if not math.isfinite(x) else f"{x:.2f}"   # as the verdict's table prints it


def headline_numbers(results):
    """Each claim's headline number as a table cell (our number, then the paper's): numbers only,
    labelled by experiment; '' where nothing has run."""
    ours, paper = {}, {}
    u = results.get("unbiasedness", {})
    if "max_abs_z" in u:
        ours[1] = f"largest z-score {u['max_abs_z']:.1f}" + (f" of {u['z_count']:,}" if "z_count" in u else "")
        ours[1] += f" (bias would show above {UNBIASED_Z:g})"
        paper[1] = "a proof"
    t = results.get("test_functions", {})
    if "reach" in t:
        said = [f"{k.capitalize()} {r[FG] / r[BP]:.2f}" for k, r in t["reach"].items() if FG in r and BP in r]
        ours[2], paper[2] = "iterations, forward / backprop: " + ", ".join(said), "alike"
        diverged = {k: r.get(FG, 0) for k, r in t.get("diverged", {}).items() if r.get(FG, 0)}
        ours[2] += "".join(f"; {n} of {t['runs']} forward-gradient runs on {k.capitalize()} diverged"
                           for k, n in diverged.items())
    rows = mnist_results(results)
    models = {}
    for label, v in rows.items():
        models.setdefault(label.split(",")[0], v)
    if models:
        ours[3] = "step, forward / backprop: " + "; ".join(f"{m}: {v['ratio']:.2f}" for m, v in models.items()
                                                               if math.isfinite(v.get("ratio", math.nan)))
        paper[3] = "; ".join(f"{name.split(',')[0]}: {RESULTS[key]['R_f/R_b']:.3g}" for name, key in PAPER_KEYS.items()
                             if name != "MLP, rate 2e-4")
        ours[4] = "; ".join(f"{k}: {_ratio(v['T_ratio'])}" for k, v in rows.items())
        paper[4] = "; ".join(f"{name}: {RESULTS[key]['T_f/T_b']:.3g}" if RESULTS[key]["T_f/T_b"] is not None
                             else f"{name}: no number" for name, key in PAPER_KEYS.items())
    s = results.get("scaling", {})
    if "table" in s:
        r, numbers = graded_depths(s)
        if numbers["graded_flushed"]:   # the deepest point was timed apart, on one thread: said apart
            before = r.drop(numbers["deepest"])
            ours[5] = f"{before.min():.2f} to {before.max():.2f} up to depth {before.index.max()}"
            if math.isfinite(numbers["control_flushed"]):   # the deepest, timed on one thread, beside its control
                ours[5] += (f"; on one thread, subnormals flushed: {numbers['control_flushed']:.2f} at depth "
                            f"{numbers['control_depth']}, {numbers['flushed_last']:.2f} at {numbers['deepest']}")
            else:
                ours[5] += f"; {numbers['flushed_last']:.2f} at depth {numbers['deepest']}, subnormals flushed"
        else:
            ours[5] = f"{r.min():.2f} to {r.max():.2f}"
        paper[5] = (f"under {DEPTH_BANDS['R_f/R_b up to 10 layers']} up to 10 layers; "
                    f"about {DEPTH_BANDS['R_f/R_b at 100 layers']} at 100")
    if "memory" in results:
        d = grading_memory_ratio(results["memory"])
        ours[6], paper[6] = f"forward / backprop {d.min():.3f} to {d.max():.3f}", MEMORY   # 1.00 would read as the same
    return ours, paper


def grading_memory_ratio(table, column="FG vs BP"):
    """Forward gradient's step memory over backprop's, per network (or, with column='FG in place
    vs BP', the in-place step's; None where the table has no such rows)."""
    from .grading import memory_differences
    differences = memory_differences(table)
    return differences[column] + 1 if column in differences else None


GLOSSARY_TERMS = {"z-score": "z-score", "subnormals": "subnormal-number"}   # words in our numbers: their entries


def glossary_links(text, terms=GLOSSARY_TERMS):
    """HTML text with the first use of each glossary word linked to its entry (glossary.html),
    as {term} links it in a chapter's Markdown, which a table glued as HTML cannot use."""
    import re
    for word, anchor in terms.items():
        text = re.sub(rf"\b{re.escape(word)}\b", f'<a href="glossary.html#term-{anchor}">{word}</a>', text, count=1)
    return text


def headline_html(results, table):
    """The introduction's verdict table: each claim with its verdict on this CPU and on a GPU
    (first, so that both stay in view on a phone), our number and the paper's, and the pages that
    hold them. HTML, since a glue reference across pages renders HTML, not Markdown: links to the
    pages' .html, the symbols typeset by MathJax, styled as the book's tables. Each cell carries its
    column's name (data-label), so that on a phone the book's style sheet shows each claim as a card
    of labelled lines (class fg-cards) instead of a table wider than the screen."""
    import html
    from .tables import card_label, mathjax_inline
    ours, paper = headline_numbers(results)
    labels = ("claim", "CPU", "GPU", "ours", "paper", "where")
    head = "".join(f"<th>{h}</th>" for h in labels)
    rows = []
    for _, row in table.iterrows():
        n = row["#"]
        claim = mathjax_inline(html.escape(row["claim"], quote=False))
        where = ", ".join(f'<a href="{_href(page)}">{label}</a>' for page, label in WHERE[n])
        gpu = "–" if row["GPU"] == DEVICE_FREE else row["GPU"].replace("untested on GPU", "not run")
        cells = [f"{n}. {claim}", f"<strong>{row['verdict']}</strong>", gpu, glossary_links(html.escape(ours.get(n, ""))),
                 html.escape(paper.get(n, "")), where]
        rows.append("<tr>" + "".join(f'<td data-label="{h}">{card_label(h) if i else ""}{c}</td>'
                                     for i, (h, c) in enumerate(zip(labels, cells))) + "</tr>")
    return (f'<div class="mathjax_process pst-scrollable-table-container"><table class="table fg-cards">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def best_normal_ratio(results):
    """The lowest forward-gradient / backprop step ratio the implementations chapter measured with
    normal directions (any engine, eager or compiled): (the ratio, its model in words, its engine
    in words), or None before that chapter has run."""
    ratios = results.get("implementations", {}).get("R_f/R_b", {})
    normal = {k: v for k, v in ratios.items() if "Rademacher" not in k and "FG" in k and v == v}
    if not normal:
        return None
    key = min(normal, key=normal.get)
    model, _, variant = key.partition(" / ")
    return normal[key], MODEL_WORDS.get(model, model), variant.removeprefix("FG, ").replace("fglib engine", "fglib's engine")


def ratio_comparison(results):
    """R_f/R_b and T_f/T_b, the paper's beside ours, one row per experiment and source; `note`
    says why a value is missing (the figure writes it where the bar would be); `low` and `high`,
    our T_f/T_b's 95% interval (NaN elsewhere; high is inf where forward gradients did not reach
    the loss in some resamples)."""
    paper_keys = {"logistic regression": "logreg", "MLP, rate 2e-5": "mlp, lr 2e-05",
                  "MLP, rate 2e-4": "mlp, lr 0.0002", "CNN": "cnn"}
    rows = []
    for label, numbers in mnist_results(results).items():
        paper = RESULTS.get(paper_keys.get(label, ""), {})
        for measure, ours in (("R_f/R_b", numbers["ratio"]), ("T_f/T_b", numbers["T_ratio"])):
            theirs = paper.get(measure)
            rows.append({"experiment": label, "measure": measure, "source": "paper", "value": theirs,
                         "note": "" if theirs is not None else _paper_words(paper_keys.get(label), measure)})
            low, high = (numbers.get("T_low", math.nan), numbers.get("T_high", math.nan)) if measure == "T_f/T_b" \
                else (math.nan, math.nan)   # the 95% interval, where the grade has one
            rows.append({"experiment": label, "measure": measure, "source": f"ours, {numbers['device']}",
                         "value": ours, "note": _why_no_value(ours, numbers), "low": low, "high": high})
    columns = ["experiment", "measure", "source", "value", "note", "low", "high"]
    return pd.DataFrame(rows, columns=columns).astype({"value": float, "low": float, "high": float})


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
        return f"not judged yet ({numbers.get('time_verdict_reason', '')})".replace(" ()", "")
    return "not measured"
