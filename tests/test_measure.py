"""The measurement helpers on small cases."""
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import fglib


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


def test_sweep_picks_best_rate_and_records_divergence(mnist):
    from fglib.book.sweep import best_rates, compare_at_best, lr_sweep
    curves, finals = lr_sweep("logreg", mnist, {"fg": [1e-4, 1e-3, 1e38], "bp": [1e-3, 1e-1]},
                              runs=1, iterations=60, eval_every=30)
    assert finals[finals.lr == 1e38].diverged.all()
    best = best_rates(finals)
    assert best == {"backprop": 0.1, "forward gradient": 1e-3}
    table = compare_at_best(curves, finals)
    assert table["iterations to target"].notna().all()
    assert set(table.index) == {"backprop", "forward gradient"}


def test_saved_bytes_counts_the_activations_not_the_weights():
    """Backprop through the MLP keeps the input and the two hidden ReLU outputs (plus the small
    softmax output and labels); the 7 MB of weights it also references are not counted."""
    model = fglib.build_model("mlp", seed=0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    bp = fglib.make_method("bp", model, F.cross_entropy, 1e-6)
    counted = fglib.saved_bytes(lambda: bp.step(x, y), exclude=list(model.parameters()))
    activations = 64 * (784 + 1024 + 1024) * 4
    assert activations <= counted <= activations + 10_000
