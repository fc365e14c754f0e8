"""Tables the chapters show: the paper's numbers beside ours, formatted for reading."""
import math

import pandas as pd

from ..to_target import budget_spent, first_for_good, step_sum
from .paper import paper_results
from .report import exponent_text, rate_text

NOT_MEASURED = "–"


def mean_sd(values, digits=3, empty="never within the run"):
    """'mean ± sd' over runs (NaN dropped), one value alone, or `empty` when there is none.

    Never '± 0.000': a spread that rounds to zero at `digits` decimals is shown to its first
    significant digit, with the mean to the same place ('0.6912 ± 0.0004'), and runs that agree
    exactly say so ('12.000, the same in every run')."""
    s = pd.Series(values, dtype=float).dropna()
    if s.empty:
        return empty
    if len(s) == 1:
        return f"{s.mean():.{digits}f}"
    sd = s.std()
    if sd == 0:
        return f"{s.mean():.{digits}f}, the same in every run"
    if round(sd, digits) == 0:
        digits = min(_digits_of(sd), 12)
    return f"{s.mean():.{digits}f} ± {sd:.{digits}f}"


def significant(x, digits=3):
    """A number to `digits` significant figures, written plainly (12.3, 0.0456, 1,230,
    2,170,000); an exponent only outside 1e-4 to 1e9, written without padding (1.19e-7,
    2.50e12); '–' for a missing value, '∞' for an infinite one (a target never reached)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return NOT_MEASURED
    if isinstance(x, str):
        return x
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    rounded = float(f"{x:.{digits}g}")
    if not 1e-4 <= abs(rounded) < 1e9:
        return exponent_text(x, digits)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:,.{decimals}f}"


def is_rate_column(name):
    """Whether a column holds learning rates or step sizes h, chosen on a grid of powers of ten
    (shown as the paper writes them: 2e-4, not 0.000200)."""
    name = str(name).rpartition(": ")[2]   # a column of a wide table, 'MNIST: best rate'
    return name in ("lr", "rate", "learning rate", "h") or name.startswith(("best rate", "best h"))


MAX_COLUMNS = 7   # the widest table a phone's page shows whole


def show(df, digits=3, integers=(), note=None, main=None, cards=False):
    """A table made for reading: no index column, numbers to `digits` significant figures,
    learning rates as the paper writes them (2e-4, report.rate_text), integer columns with
    thousands separators, '–' where a value was not measured, and a footnote (`note`) saying
    why, when there is any '–' (a dict {mark: meaning} explains other marks too, e.g. '>': see
    _footnote). A table of more than MAX_COLUMNS columns, or one whose `main`
    leaves columns out, shows the columns `main` (at most MAX_COLUMNS; the first ones if not
    given) and folds the whole table away under it, so that the page fits a phone and nothing
    is lost. With cards=True the shown table is written as HTML whose cells name their column,
    which a phone shows as one card per row (the book's style sheet, class fg-cards): for a
    table of records too wide for a phone's screen."""
    from IPython.display import HTML, Markdown
    if not isinstance(cards, bool):
        raise TypeError(f"cards must be True or False, got {cards!r}")
    table = df.reset_index(drop=not _named_index(df))
    if len(table.columns) <= MAX_COLUMNS and (main is None or set(table.columns) <= set(main)):
        return HTML(_html(table, digits, integers, note)) if cards else Markdown(_markdown(table, digits, integers, note))
    main = list(main or table.columns[:MAX_COLUMNS])
    if len(main) > MAX_COLUMNS or not set(main) <= set(table.columns):
        raise ValueError(f"main must name at most {MAX_COLUMNS} of the table's columns, not {main}")
    title = f"The whole table ({len(table.columns)} columns)"
    if cards:
        return HTML(_html(table[main], digits, integers, note) + _dropdown(title, _html(table, digits, integers, note)))
    shown, whole = _markdown(table[main], digits, integers, note), _markdown(table, digits, integers, note)
    return Markdown(f"{shown}\n\n:::{{dropdown}} {title}\n{whole}\n:::")


_CHEVRON = ('<svg version="1.1" width="1.5em" height="1.5em" class="sd-octicon sd-octicon-chevron-right" '
            'viewBox="0 0 24 24" aria-hidden="true"><path d="M8.72 18.78a.75.75 0 0 1 0-1.06L14.44 12 8.72 '
            '6.28a.751.751 0 0 1 .018-1.042.751.751 0 0 1 1.042-.018l6.25 6.25a.75.75 0 0 1 0 1.06l-6.25 6.25a.75.75 '
            '0 0 1-1.06 0Z"></path></svg>')   # sphinx-design's own marker, which turns as the fold opens


def _dropdown(title, body):
    """HTML folded away under `title`, as the book's MyST {dropdown} renders it (sphinx-design's
    classes), for a table written as HTML (show with cards=True), which a Markdown directive
    cannot hold."""
    return (f'<details class="sd-sphinx-override sd-dropdown sd-card sd-mb-3">'
            f'<summary class="sd-summary-title sd-card-header"><span class="sd-summary-text">{_html_text(title)}</span>'
            f'<span class="sd-summary-state-marker sd-summary-chevron-right">{_CHEVRON}</span></summary><div class="sd-summary-content sd-card-body">{body}</div></details>')


COUNT_COLUMNS = ("runs", "pairs", "processes", "rounds", "K", "depth", "I (iterations)")   # counts: 3, never 3.00


def reach_note(table, iterations):
    """The footnotes of a table from sweep.at_best_rates (shown with sweep.with_reach_bounds): what
    '> x' means in its I and T columns, and what a '–' means in its sd column where some method had
    a single run, or in I and T where no bound was given."""
    single = "; sd: a single run" if table["± sd"].isna().any() else ""
    return {">": f"not every run reached the target within {iterations:,} iterations; counting those runs as "
                 f"reaching it at the end gives this lower bound",
            NOT_MEASURED: f"I and T: not every run reached the target within {iterations:,} iterations{single}"}


def _counts(table, col):
    """True for a column of counts (by its name) whose every measured value is a whole number."""
    if col not in COUNT_COLUMNS or not pd.api.types.is_numeric_dtype(table[col]):
        return False
    values = table[col].dropna()
    return len(values) > 0 and bool((values == values.round()).all())


def _formatted(table, digits, integers):
    """show's cells as text, with each column's alignment."""
    cells = table.copy().astype(object)
    for col in table.columns:
        if col in integers or _counts(table, col):
            cells[col] = [NOT_MEASURED if v != v else f"{int(v):,}" for v in table[col]]
        elif pd.api.types.is_numeric_dtype(table[col]) and is_rate_column(col):
            cells[col] = [NOT_MEASURED if v != v else rate_text(v) for v in table[col]]
        elif pd.api.types.is_numeric_dtype(table[col]):
            cells[col] = [significant(v, digits) for v in table[col]]
    for before, col in zip(table.columns, table.columns[1:]):
        if col == "± sd" and pd.api.types.is_numeric_dtype(table[col]) and pd.api.types.is_numeric_dtype(table[before]):
            cells[col] = [spread_text(s, m) for s, m in zip(table[col], cells[before])]
    align = ["right" if pd.api.types.is_numeric_dtype(table[c]) else "left" for c in table.columns]
    return cells, align


def spread_text(sd, mean_text):
    """A spread (a '± sd' cell) to the decimals of the mean beside it as shown (54.8 ± 1.6, not ± 1.56; 2.27 ±
    0.20), or to its first significant digit where those decimals would round it to zero."""
    if sd != sd:
        return NOT_MEASURED
    decimals = len(mean_text.partition(".")[2]) if "e" not in mean_text else _digits_of(sd)
    if round(sd, decimals) == 0 and sd > 0:
        decimals = _digits_of(sd)
    return f"{sd:,.{decimals}f}"


def _digits_of(x):
    """Decimals that show x's first significant digit (0.004 -> 3)."""
    return max(0, -math.floor(math.log10(abs(x)))) if x else 0


def _footnote_text(cells, note, bound):
    """The table's footnote as one line, or '' if no cell needs it: note says what a '–' means; a
    dict {mark: meaning} explains each mark ('–', or '>' for a cell that is a bound such as '> 43')
    that some cell shows. `bound` is how the line writes the mark '>' ('\\> x' in Markdown, where a
    line that starts with '>' is a quotation)."""
    if not note:
        return ""
    marks = note if isinstance(note, dict) else {NOT_MEASURED: note}
    shown = [cells.map(lambda c, m=m: isinstance(c, str) and (c == m or c.startswith(m + " "))).any().any() for m in marks]
    return "; ".join(f"{bound if m == '>' else m}: {meaning}" for (m, meaning), s in zip(marks.items(), shown) if s)


def _footnote(cells, note):
    """The table's footnote in Markdown, below the table."""
    text = _footnote_text(cells, note, "\\> x")
    return "\n\n" + text if text else ""


def _footnote_html(cells, note):
    """The table's footnote as an HTML paragraph."""
    text = _footnote_text(cells, note, "> x")
    return f"<p>{_html_text(text)}</p>" if text else ""


def _markdown(table, digits, integers, note):
    """show's table as Markdown, for the columns it is given."""
    cells, align = _formatted(table, digits, integers)
    cells = cells.map(_escape_pipes).rename(columns=_escape_pipes)  # a bare | would end the cell
    return cells.to_markdown(index=False, disable_numparse=True, colalign=align) + _footnote(cells, note)


def mathjax_inline(text):
    """HTML text with its $maths$ written \\(maths\\), as MathJax typesets it inside raw HTML."""
    import re
    return re.sub(r"\$([^$]+)\$", lambda m: f"\\({m.group(1)}\\)", text)


def _html_text(value):
    """A cell or header as HTML, as the Markdown table would show it: escaped, apostrophes curled,
    its maths left for MathJax (mathjax_inline)."""
    import html
    return mathjax_inline(html.escape(str(value), quote=False).replace("'", "’"))


def card_label(name):
    """A cell's own copy of its column's name, maths typeset: hidden on a wide screen, shown on a
    phone, where a table of class fg-cards becomes one card per row (_static/custom.css)."""
    return f'<span class="fg-card-label">{_html_text(name)}: </span>'


def _html(table, digits, integers, note):
    """show's table as HTML (an HTML output of its cell), each cell naming its column in
    data-label and in a label of its own (card_label), of class fg-cards: a phone shows each row
    as a card (_static/custom.css)."""
    import html
    cells, align = _formatted(table, digits, integers)
    names = [str(c) for c in cells.columns]
    head = "".join(f'<th class="head text-{a}">{_html_text(n)}</th>' for n, a in zip(names, align))
    labels = [html.escape(n.replace("$", "").replace("'", "’")) for n in names]   # plain text, for the attribute
    rows = "".join("<tr>" + "".join(f'<td class="text-{a}" data-label="{label}">{card_label(name)}{_html_text(v)}</td>'
                                     for label, name, a, v in zip(labels, names, align, row)) + "</tr>"
                   for row in cells.itertuples(index=False))
    return (f'<div class="mathjax_process pst-scrollable-table-container"><table class="table fg-cards">'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>" + _footnote_html(cells, note))


def _escape_pipes(value):
    return value.replace("|", "\\|") if isinstance(value, str) else value


def _named_index(df):
    return any(name is not None for name in df.index.names)


def runtime_table(runtime):
    """measure_runtime's rows for reading: one row per run, times in milliseconds."""
    ms = lambda col: 1e3 * runtime[col]
    return pd.DataFrame({
        "run": runtime["run"] + 1, "base (ms)": ms("base"), "FG step, fglib engine (ms)": ms("fg"),
        "FG step, forward_ad (ms)": ms("fg_forward_ad"), "BP step (ms)": ms("bp"),
        "R_f": runtime["R_f"], "R_b": runtime["R_b"], "R_f/R_b": runtime["R_f/R_b"]})


def decay_budget_table(lengths, rates, decay):
    """Per run length: the share of all the steps the decay eta_0 e^{-ik} will ever take, and the
    sum of the steps taken at each starting rate (fglib.to_target.budget_spent, step_sum)."""
    return pd.DataFrame([{"iterations": n, "share of the decay's steps taken": f"{100 * budget_spent(n, decay):.2f}%",
                          **{f"sum of steps at η0 = {rate_text(rate)}": step_sum(rate, n, decay) for rate in rates}}
                         for n in lengths])


def paper_beside_raw(experiment, report, costs, memory, runs):
    """The paper's numbers beside ours for an experiment saved raw (fglib.book.runs), from the
    grading module's report and step costs: one row per measure, '–' where the paper gives none
    or we have not measured it yet."""
    paper = paper_results(experiment)
    dash = "–"
    fmt = lambda x, d=3: dash if x is None or x != x else significant(x, d)
    t_ours = dash
    if report.get("T_ratio") is not None and report.get("T_ratio") == report.get("T_ratio"):
        t_ours = (f"{significant(report['T_ratio'], 3)} (95%: {_interval(report['low'], report['high'])})"
                  if math.isfinite(report["T_ratio"]) else "never within the run")
    rows = [("R_f", paper.get("R_f"), fmt(costs["R_f"]) if costs else dash),
            ("R_b", paper.get("R_b"), fmt(costs["R_b"]) if costs else dash),
            ("R_f/R_b = S_f/S_b", paper.get("R_f/R_b"), fmt(costs["S_ratio"]) if costs else dash),
            ("I_f/I_b", None, dash if "I_ratio" not in report else
             "never within the run" if not math.isfinite(report["I_ratio"]) else fmt(report["I_ratio"], 3)),
            ("T_f/T_b", paper.get("T_f/T_b"), t_ours)]
    if not runs.empty:
        test = runs[runs["split"] == "test"]
        last = test[test["iteration"] == test.groupby(["method", "seed"])["iteration"].transform("max")]
        for method, acc in last.groupby("method")["accuracy"]:
            rows.append((f"final test accuracy (%, mean ± sd over runs), {method}", None,
                         mean_sd((100 * acc).tolist(), 1)))   # as the prose quotes it
    if memory is not None and not memory.empty:
        for _, m in memory.iterrows():
            rows.append((f"step memory, weights included (MiB), {m['method']}", None, fmt(m["total"] / 2**20)))
    return pd.DataFrame([{"measure": m, "paper": dash if p is None else p, "ours": o} for m, p, o in rows])


def _interval(low, high):
    """'2.2 to 2.5', or 'from 2.2 up' when the upper end is unbounded (in some bootstrap
    resamples forward gradients never reached the loss), never 'to inf'."""
    return (f"{significant(low, 3)} to {significant(high, 3)}" if math.isfinite(high)
            else f"from {significant(low, 3)} up")


def _interval_or_never(low, high):
    return _interval(low, high) if math.isfinite(low) else "never"


def tolerance_display(table):
    """grading.tolerance_table made for reading: 'never' where forward gradient did not reach the
    level (an infinite ratio, no I_f), numbers to 3 significant figures, integers with separators,
    the 95% interval in one column as the other tables write it ('2.2 to 2.5', 'from 2.4 up')."""
    out = pd.DataFrame({"tolerance": [f"{100 * t:g}%" for t in table["tolerance"]],
                        "level": [significant(v, 3) for v in table["level"]]})
    for col in ("I_b", "I_f"):   # headers in maths, as the prose writes them
        out[f"${col}$"] = ["never" if v != v or not math.isfinite(v) else f"{v:,.0f}" for v in table[col]]
    for col in ("I_f/I_b", "S_f/S_b", "T_f/T_b"):
        out[f"${col}$"] = ["never" if not math.isfinite(v) else significant(v, 3) for v in table[col]]
    out["95% interval"] = [_interval_or_never(low, high) for low, high in zip(table["95% low"], table["95% high"])]
    out["resamples reaching the level"] = [f"{v:.0%}" for v in table["resamples reaching"]]
    return out


def run_length_display(table, rows=5, fg_on=False, include=()):
    """grading.by_run_length's table made for reading, at `rows` lengths spread over it (the
    first, the last and evenly between) and the lengths in `include` (those the page's words
    quote): the length, I_f/I_b and T_f/T_b each with its 95% interval, T_f/T_b at the paper's
    step ratio; 'never' where forward gradients did not reach the level. `fg_on`: add I_f/I_b
    with forward gradients' runs as saved (longer than backprop's cut), after I's interval."""
    spread = {round(k * (len(table) - 1) / max(rows - 1, 1)) for k in range(rows)}
    quoted = {i for i, length in enumerate(table["length"]) if length in set(include) | _turning_lengths(table, fg_on)}
    picked = table.iloc[sorted(spread | quoted)]
    ratio = lambda v: "never" if not math.isfinite(v) else significant(v, 3)   # as the prose quotes them (1.07)
    out = pd.DataFrame({"run length": [f"{v:,}" for v in picked["length"]],
                        "$I_f/I_b$": [ratio(v) for v in picked["I_f/I_b"]],
                        "$I_f/I_b$, 95%": [_interval_or_never(lo, hi) for lo, hi in zip(picked["I low"], picked["I high"])],
                        "$T_f/T_b$": [ratio(v) for v in picked["T_f/T_b"]],
                        "$T_f/T_b$, 95%": [_interval_or_never(lo, hi) for lo, hi in zip(picked["T low"], picked["T high"])]})
    if "paper T_f/T_b" in picked:
        out["$T_f/T_b$ at the paper's $S_f/S_b$"] = [ratio(v) for v in picked["paper T_f/T_b"]]
    if fg_on:
        out.insert(3, "$I_f/I_b$, FG run on", [ratio(v) for v in picked["I_f/I_b, FG on"]])
    return out


def _turning_lengths(table, fg_on):
    """The lengths where a chapter's words turn: where the claim starts to hold for good and the
    length before it; where forward gradients first reach backprop's lowest loss for good and the
    length before; with `fg_on`, where I_f/I_b with forward gradients run on is lowest and highest."""
    import numpy as np
    ordered = table.sort_values("length")
    lengths = ordered["length"].tolist()
    found = set()
    for start in (first_for_good(ordered["T high"].to_numpy(dtype=float) < 1, lengths) if "T high" in table else None,
                  first_for_good(np.isfinite(ordered["I_f/I_b"].to_numpy(dtype=float)), lengths)):
        if start is not None and start in lengths:
            k = lengths.index(start)
            found |= {start} | ({lengths[k - 1]} if k > 0 else set())
    if fg_on and "I_f/I_b, FG on" in table:
        on = table["I_f/I_b, FG on"].to_numpy(dtype=float)
        if np.isfinite(on).any():
            found |= {int(table["length"].iloc[int(np.nanargmin(np.where(np.isfinite(on), on, np.nan)))]),
                      int(table["length"].iloc[int(np.nanargmax(np.where(np.isfinite(on), on, np.nan)))])}
    return found


def paired_display(pairs, extra=None):
    """grading.paired_ratios' table made for reading: one row per seed, backprop's lowest
    validation loss on it, the iterations each method needed to reach it ('never' where forward
    gradients did not) and their ratio; `extra` ({column: Series by seed}) adds columns."""
    ratio = lambda v: "never" if not math.isfinite(v) else significant(v, 3)   # as the prose quotes them (1.07)
    out = pd.DataFrame({"seed": [str(int(s)) for s in pairs.index],
                        "backprop's lowest": [significant(v, 3) for v in pairs["level"]],
                        "$I_b$": [f"{v:,.0f}" for v in pairs["I_b"]],
                        "$I_f$": ["never" if v != v else f"{v:,.0f}" for v in pairs["I_f"]],
                        "$I_f/I_b$": [ratio(v) for v in pairs["I_f/I_b"]]})
    for name, values in (extra or {}).items():
        out[name] = [significant(values[s], 3) for s in pairs.index]
    return out
