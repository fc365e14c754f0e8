"""The variance chapter's tables derive from its raw draws and timing rounds, and agree with the
direct computation they replace."""
import math

import pandas as pd
import pytest
import torch.nn.functional as F

import fglib
from fglib.book import variance as var
from fglib.stats import network_errors


def test_the_error_table_from_raw_draws_equals_the_direct_estimate(mnist):
    model = fglib.build_model("logreg", seed=0)
    x, y = mnist["train"].x[:32], mnist["train"].y[:32]
    draws = var.error_draws({("logreg", "initial"): model}, x, y, [("normal", 1), ("rademacher", 2)], 12, seed=3)
    assert len(draws) == 12 * 2 * 2   # draws x laws x tensors (weight, bias)
    table, shares = var.error_table(draws)
    for (kind, k), (_, row) in zip([("normal", 1), ("rademacher", 2)], table.iterrows()):
        errors, norm2 = network_errors(model, F.cross_entropy, x, y, kind, 12, k, seed=3)
        assert row["error / ‖∇f‖²"] == pytest.approx(errors["squared error"].mean() / norm2, rel=1e-6)
        assert row["± (se)"] == pytest.approx(errors["squared error"].std() / math.sqrt(12) / norm2, rel=1e-6)
        assert row["cosine"] == pytest.approx(errors["cosine"].mean(), rel=1e-6)
    assert table["parameters"].tolist() == [7850, 7850]
    assert shares["tensor"].tolist() == ["1.weight", "1.bias"]   # the normal law with K = 1 only
    assert shares["share of the error"].sum() == pytest.approx(1.0)
    assert shares["share of the parameters"].sum() == pytest.approx(1.0)


def test_k_costs_read_as_medians_against_backprop_in_the_order_timed():
    names = {"base": (None, None), "backprop": (None, None), "K = 1, K passes": (1, "K passes"),
             "K = 4, K passes": (4, "K passes"), "K = 4, one batched pass": (4, "one batched pass")}
    seconds = {"base": 1.0, "backprop": 2.0, "K = 1, K passes": 3.0, "K = 4, K passes": 12.0,
               "K = 4, one batched pass": 5.0}
    rounds = pd.DataFrame([{"round": r, "name": n, "seconds": seconds[n] * (1 + 0.01 * (r % 2)), "disturbed": False,
                            "K": k, "pass": p} for r in range(9) for n, (k, p) in names.items()])
    table, bp = var.k_cost_table(rounds)
    assert bp == pytest.approx(2.0, rel=0.02)
    assert table["K"].tolist() == [1, 4, 4] and table["pass"].tolist() == ["K passes", "K passes", "one batched pass"]
    assert table["S / S_backprop"].tolist() == pytest.approx([1.5, 6.0, 2.5], rel=1e-6)
    assert var.k_step_ms(table, bp)["backprop"] == pytest.approx(2000.0, rel=0.02)
