"""Tables the chapters show: the paper's numbers beside ours, formatted for reading."""
import pandas as pd

from ..measure import per_run_time_ratios, time_to_target
from .paper import paper_results

NO_ALLOCATOR = "not measured (CPU: no allocator statistics)"


def mean_sd(values, digits=3, empty="never within the run"):
    """'mean ± sd' over runs (NaN dropped), one value alone, or `empty` when there is none."""
    s = pd.Series(values, dtype=float).dropna()
    if s.empty:
        return empty
    return f"{s.mean():.{digits}f} ± {s.std():.{digits}f}" if len(s) > 1 else f"{s.mean():.{digits}f}"


def paper_vs_ours(experiment, curves, finals, runtime, device_label):
    """One row per measure: the paper's number beside ours (mean ± sd over runs)."""
    paper = paper_results(experiment)
    t = time_to_target(curves[curves["split"] == "validation"])
    per_run = per_run_time_ratios(curves)
    reached = sum(pd.notna(per_run))
    t_ours = (f"{t['T_f/T_b']:.3f} (mean curves); per run {mean_sd(per_run)}, {reached}/{len(per_run)} reached"
              if t["reached"] else f"never within the run ({reached}/{len(per_run)} runs reached)")
    acc = finals.groupby("method")["test_accuracy"].apply(list)
    mb = lambda col: (runtime[col] / 2**20).tolist()
    rows = [
        ("R_f", paper["R_f"], mean_sd(runtime["R_f"])),
        ("R_b", paper["R_b"], mean_sd(runtime["R_b"])),
        ("R_f/R_b", paper["R_f/R_b"], mean_sd(runtime["R_f/R_b"])),
        ("T_f/T_b", paper["T_f/T_b"] if paper["T_f/T_b"] is not None else "close to R_f/R_b", t_ours),
        ("peak memory, forward gradient (MiB)", "same as backprop", mean_sd(mb("peak_memory_fg"), 1, NO_ALLOCATOR)),
        ("peak memory, backprop (MiB)", "same as forward gradient", mean_sd(mb("peak_memory_bp"), 1, NO_ALLOCATOR)),
        ("saved for backward, backprop (MiB)", "not reported", mean_sd(mb("saved_bytes_bp"), 2)),
        ("test accuracy, forward gradient", "not reported", mean_sd(acc.get("forward gradient", []), 4)),
        ("test accuracy, backprop", "not reported", mean_sd(acc.get("backprop", []), 4)),
    ]
    return pd.DataFrame(rows, columns=["measure", "paper (Titan XP)", f"ours ({device_label})"]).set_index("measure")
