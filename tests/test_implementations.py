"""The implementations chapter's tables derive from its raw timing rounds: each part and each draw
in base runtimes, a floor that counts drawing v for the forward gradient only, and one summary
per group of rounds against that group's own backprop."""
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import fglib

from fglib.book import implementations as impl


def rounds(times, n=21, disturbed=()):
    """Fabricated interleaved rounds: each name's seconds, a little noise, some rounds disturbed."""
    return pd.DataFrame([{"round": r, "name": k, "seconds": v * (1 + 0.001 * (r % 3)), "disturbed": r in disturbed}
                         for r in range(n) for k, v in times.items()])


def test_the_floor_is_the_bare_products_plus_the_update_plus_drawing_v_for_the_forward_gradient():
    times = {"forward gradient": 5.0, "forward gradient: products": 2.0, "forward gradient: update": 0.5,
             "backprop": 4.0, "backprop: products": 3.0, "backprop: update": 0.5, "draw v": 0.5}
    work = pd.DataFrame({"model": "mlp", "method": ["forward gradient", "backprop"], "FLOP per step": [3e9, 3e9]})
    t = impl.floor_table(rounds(times).assign(model="mlp"), work).set_index("method")
    assert t.loc["forward gradient", "floor (ms)"] == pytest.approx(3000.0, rel=2e-3)
    assert t.loc["backprop", "floor (ms)"] == pytest.approx(3500.0, rel=2e-3)   # no draw: the control
    assert t.loc["forward gradient", "step / floor"] == pytest.approx(5 / 3, rel=2e-3)
    assert t.loc["backprop", "GFLOP/s"] == pytest.approx(3 / 4, rel=2e-3)


def test_each_part_of_a_step_reads_in_base_runtimes_in_the_order_it_was_timed():
    times = {"base: forward and loss, no derivatives": 2.0, "forward gradient: draw v": 0.5,
             "forward gradient: form g = d v": 0.2, "backprop: forward (recording) and backward": 6.0}
    t = impl.breakdown_table(rounds(times).assign(model="mlp"))
    assert t["part"].tolist() == ["draw v", "form g = d v", "forward (recording) and backward"]
    assert t["method"].tolist() == ["forward gradient", "forward gradient", "backprop"]
    assert t["base runtimes"].tolist() == pytest.approx([0.25, 0.1, 3.0], rel=2e-3)


def test_drawing_v_reads_in_base_runtimes_and_a_way_not_timed_is_nan():
    t = impl.draw_table(rounds({"base": 2.0, "randn": 1.0, "Rademacher": 0.2}).assign(model="cnn", parameters=7))
    row = t.iloc[0]
    assert row["randn"] == pytest.approx(0.5, rel=2e-3) and row["Rademacher"] == pytest.approx(0.1, rel=2e-3)
    assert row["parameters"] == 7 and row["parallel normal"] != row["parallel normal"]


def test_each_group_of_rounds_is_summarised_against_its_own_backprop():
    a = rounds({"base": 1.0, "backprop": 2.0, "FG, fglib engine": 4.0}).assign(model="mlp", batch=64)
    b = rounds({"base": 1.0, "backprop": 4.0, "FG, fglib engine": 4.0}).assign(model="mlp", batch=256)
    s = impl.summarise_groups(pd.concat([a, b]), by=("model", "batch"))
    fg = s[s["variant"] == "FG, fglib engine"].set_index("batch")["R/R_b"]
    assert fg[64] == pytest.approx(2.0, rel=2e-3) and fg[256] == pytest.approx(1.0, rel=2e-3)
    assert set(s["rounds"]) == {21} and set(s["quiet rounds"]) == {21}


def test_a_target_whose_rounds_straddle_its_limit_is_within_the_noise_not_missed_by_two_percent():
    """A median 2% above the limit whose interquartile range holds it is 'within the noise'; the
    controls: the same median with a range above the limit is 'not met, by 2%', and one below is met."""
    assert impl.status(1.02, 1.0, 0.99, 1.04) == "within the noise (IQR 0.990–1.040)"
    assert impl.status(1.02, 1.0, 1.003, 1.04) == "not met, by 2% (lower quartile 1.003)"   # 1.00 to two figures
    assert impl.status(0.95, 1.0, 0.93, 0.98) == "met"
    assert impl.status(1.02, 1.0) == "not met, by 2%"   # no range given: the median decides


def test_the_in_place_steps_are_timed_in_rounds_of_their_own_and_each_is_a_method_that_runs():
    """LEAN's labels name methods make_steps builds and runs (each returns its loss, and trains its own
    copy of the model, never the one it was given), and the main comparison's variants leave the
    in-place ones out (they have their own rounds and their own table). Control: an unknown label is
    refused by name."""
    from fglib.book import implementations as impl
    assert all(label in impl.VARIANTS for label in impl.LEAN)
    for device in ("cpu", "cuda"):
        assert not [label for label in impl.variants_for(device) if "in place" in label or label == impl.PLAIN]
    model = fglib.build_model("logreg", seed=0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    steps = impl.make_steps(model, x, y, list(impl.LEAN))
    for label in impl.LEAN:
        before = [p.detach().clone() for p in model.parameters()]
        assert torch.isfinite(torch.as_tensor(steps[label]()))
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # each step trains its own copy
    with pytest.raises(ValueError, match="labels must be among"):
        impl.make_steps(model, x, y, ["FG in place, normal"])


def test_the_plain_pytorch_loop_takes_the_same_step_as_fglibs_backprop():
    """The second backprop reference computes the same weights as make_method('bp') with plain SGD
    (foreach or not, SGD adds -lr grad), so timing it against fglib's bp compares only how the step is
    run. Control: a step with another batch gives other weights."""
    import copy
    model = fglib.build_model("mlp", seed=0).double()
    x, y = torch.randn(8, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (8,))
    plain, ours = copy.deepcopy(model), copy.deepcopy(model)
    step = impl.plain_backprop(plain)
    bp = fglib.make_method("bp", ours, F.cross_entropy, impl.LR, decay=0.0)
    for _ in range(3):
        step(x, y)
        bp.step(x, y)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), ours.parameters()))
    impl.plain_backprop(model)(x[:4], y[:4])   # control
    assert not all(torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters()))


def test_the_lean_targets_grade_memory_from_claim_6s_table_and_time_from_the_lean_rounds():
    """On fabricated numbers: fg's memory at 0.9 of backprop's is met and fg_inplace's at 0.6 on the
    MLP is missed by 9%; fg_inplace at 1.5 fg steps is missed, fg at 1.05 backprop steps met, set
    against the faster backprop (the plain loop here). Controls: without claim 6's table the memory
    targets are 'not measured'; with fglib's bp the faster reference, it is the one named."""
    import pandas as pd
    memory = pd.DataFrame([{"network": n, "method": m, "total": t} for n, rows in
                           {"MLP": {"backprop": 100, "forward gradient": 90, "forward gradient, in place": 60},
                            "CNN": {"backprop": 100, "forward gradient": 100, "forward gradient, in place": 80}}.items()
                           for m, t in rows.items()])
    times = {"base": 1.0, "backprop": 2.2, impl.PLAIN: 2.0, "backprop, in place": 2.0, impl.LEAN_FG: 2.1,
             impl.LEAN_FG_IN_PLACE: 3.15}
    lean = pd.DataFrame([{"round": r, "name": k, "seconds": v * (1 + 0.001 * (r % 3)), "disturbed": False}
                           for r in range(30) for k, v in times.items()]).assign(model="mlp")
    t = impl.lean_targets(lean, memory).set_index("target")["status"].tolist()
    assert t[:4] == ["met", "met", "not met, by 9%", "met"]
    assert t[4].startswith("not met, by 50%") and t[5] == "met"
    assert impl.lean_targets(lean, memory).attrs["against"] == impl.PLAIN
    assert impl.lean_targets(lean, pd.DataFrame())["status"].tolist()[:4] == ["not measured"] * 4
    slower_plain = lean.assign(seconds=lean["seconds"].where(lean["name"] != impl.PLAIN, 2.5))
    assert impl.lean_targets(slower_plain, memory).attrs["against"] == "backprop"


def test_the_chapter_timing_run_again_gives_each_runs_ratio_of_medians_with_where_it_ran():
    """Fabricated rounds of two runs (a fresh process at 2x backprop, this process at 3x, one
    disturbed round in each that quiet() drops): each run's S_f/S_b is its ratio of medians, labelled
    with its pair and where it ran. Control: the runs are not pooled into one ratio."""
    from fglib.book.grading import BP, FG
    rows = []
    for process, (where, factor) in enumerate((("fresh process", 2.0), ("this process", 3.0))):
        for r in range(11):
            slow = 5.0 if r == 3 else 1.0   # a disturbed round
            rows += [{"round": r, "name": n, "seconds": s * slow, "disturbed": r == 3, "process": process,
                      "pair": 0, "where": where}
                     for n, s in (("base", 0.5), (BP, 1.0 + 0.01 * (r % 2)), (FG, factor * (1.0 + 0.01 * (r % 2))))]
    table = impl.timing_again_table(pd.DataFrame(rows)).set_index("where")
    assert table.loc["fresh process", "S_f/S_b"] == pytest.approx(2.0, rel=1e-9)
    assert table.loc["this process", "S_f/S_b"] == pytest.approx(3.0, rel=1e-9)
    assert (table["rounds"] == 10).all() and (table["pair"] == 0).all()


def test_products_counts_matrix_products_and_those_by_a_zero_matrix():
    """A product by a matrix of zeros is counted as such; by a non-zero matrix it is not (the
    control); other operations are not products at all."""
    x = torch.ones(3, dtype=torch.float64)
    assert impl.products(lambda: torch.zeros(3, 3, dtype=torch.float64) @ x) == (1, 1)
    assert impl.products(lambda: torch.eye(3, dtype=torch.float64) @ x) == (1, 0)
    assert impl.products(lambda: (x * 2).sum()) == (0, 0)
    assert impl.products(lambda: torch.ones(2, 3) @ torch.ones(3, 4)) == (1, 0)
