"""The fine-tuning chapter's machinery (fglib.book.finetune): each regime trains what it says and
nothing else, pre-training is re-created from its cache bit for bit, and memory adds up."""
import pandas as pd
import pytest
import torch

from fglib.book import finetune
from fglib.book.raw import RawTables


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrained")


def pretrained(mnist, folder):
    return finetune.pretrain("mlp", mnist, 20, 0.1, seed=0, cache=folder, progress=False)


def test_pretraining_is_cached_and_the_cache_gives_back_the_same_weights(mnist, cache):
    state, acc = pretrained(mnist, cache)
    again, acc2 = pretrained(mnist, cache)
    assert acc == acc2 and all(torch.equal(state[k], again[k]) for k in state)
    assert list(cache.glob("pretrained-mlp-20-0.1-seed0.pt"))


def test_each_regime_trains_only_what_it_says(mnist, cache):
    state, _ = pretrained(mnist, cache)
    every = finetune.fine_tune_model("mlp", state, "all layers", seed=3)
    last = finetune.fine_tune_model("mlp", state, "last layer", seed=3)
    head = finetune.read_out(last)
    assert [p for p in last.parameters() if p.requires_grad] == list(head.parameters())
    assert all(p.requires_grad for p in every.parameters())
    # the body is the pre-trained one; the read-out is new, the same for the same seed (control: another seed)
    assert torch.equal(every[1].weight, state["1.weight"]) and not torch.equal(head.weight, state["5.weight"])
    assert torch.equal(head.weight, finetune.read_out(every).weight)
    other = finetune.fine_tune_model("mlp", state, "all layers", seed=4)
    assert not torch.equal(finetune.read_out(other).weight, head.weight)
    sub = finetune.fine_tune_model("mlp", state, "subspace", seed=3, dim=100)
    assert [p.numel() for p in sub.parameters() if p.requires_grad] == [100]
    assert "MeZO" not in finetune.methods_for("subspace") and "MeZO" in finetune.methods_for("last layer")


def test_a_sweep_stops_a_method_at_its_first_divergent_rate(mnist, cache):
    state, _ = pretrained(mnist, cache)
    make = lambda s: finetune.fine_tune_model("mlp", state, "all layers", seed=s)
    methods = {"FG, normal": finetune.METHODS["FG, normal"]}
    curves, finals = finetune.sweep(make, mnist, methods, {"FG, normal": [1e3, 1e-4, 1e4]}, 1, 200, 4,
                                    eval_examples=200, progress=False)
    assert finals["status"].tolist() == ["ran", "diverged", "skipped: above a divergent rate"]
    assert finals["lr"].tolist() == [1e-4, 1e3, 1e4] and set(curves["lr"]) == {1e-4}


def test_memory_in_the_papers_sense_counts_what_is_alive_and_frozen_layers_hold_no_gradient(mnist, cache):
    state, _ = pretrained(mnist, cache)
    x, y = mnist["train"].x[:64], mnist["train"].y[:64]
    methods = {k: finetune.METHODS[k] for k in ("FG, normal", "backprop")}
    for regime, grad_mib in (("all layers", 1_863_690 * 4 / 2 ** 20), ("last layer", 10_250 * 4 / 2 ** 20)):
        make = lambda s: finetune.fine_tune_model("mlp", state, regime, seed=s)
        rounds, memory = finetune.step_rounds(make, methods, x, y, repeats=2, warmup=1)
        m = memory.set_index("name")
        assert m.loc["backprop", "gradients (MiB)"] == pytest.approx(grad_mib)
        assert m.loc["FG, normal", "gradients (MiB)"] == pytest.approx(grad_mib)
        parts = m[["weights (MiB)", "gradients (MiB)", "optimiser state (MiB)", "step peak (MiB)"]].sum(axis=1)
        # both free their old gradient before making the new one (forward gradient before it draws v,
        # backprop before its backward pass): not counted twice
        assert m.loc["FG, normal", "total (MiB)"] <= parts["FG, normal"] - grad_mib * 0.99
        assert m.loc["backprop", "total (MiB)"] <= parts["backprop"] - grad_mib * 0.99
        assert set(rounds["name"]) == {"inference", *methods}


def at_best(errors):
    """at_best_rates-like rows: {(regime, method): (test error %, sd)}."""
    import pandas as pd
    return pd.DataFrame([{"regime": r, "method": m, "test error (%)": e, "± sd": sd}
                         for (r, m), (e, sd) in errors.items()])


def test_the_gap_narrows_only_beyond_the_spread_of_the_runs():
    from fglib.book import grading
    table = at_best({("from scratch", "FG, normal"): (50.0, 1.0), ("from scratch", "backprop"): (15.0, 0.5),
                     ("all layers", "FG, normal"): (30.0, 1.0), ("all layers", "backprop"): (14.0, 0.5),
                     ("all layers", "FG, K = 4, projected"): (25.0, 1.0),
                     ("last layer", "FG, normal"): (49.0, 1.0), ("last layer", "backprop"): (15.0, 0.5)})
    gaps = grading.finetune_gaps(table)
    g = gaps.set_index("regime")
    assert g.loc["all layers", "gap (points)"] == 16.0 and g.loc["all layers", "best variant"] == "FG, K = 4, projected"
    assert g.loc["all layers", "its gap (points)"] == 11.0
    assert grading.gap_change(gaps, "all layers") == "narrowed"          # 35 -> 16 points, spreads 1.5 + 1.5
    assert grading.gap_change(gaps, "last layer") == "about the same"    # the control: 35 -> 34, within 3
    worse = grading.finetune_gaps(table.assign(**{"test error (%)": [50.0, 15.0, 60.0, 14.0, 25.0, 49.0, 15.0]}))
    assert grading.gap_change(worse, "all layers") == "widened"


def test_averaging_and_projecting_k_tangents_are_told_apart_only_beyond_the_spread():
    from fglib.book import grading
    table = at_best({("last layer", "FG, normal"): (45.0, 1.0), ("last layer", "FG, K = 4, mean"): (40.0, 1.0),
                     ("last layer", "FG, K = 4, projected"): (39.5, 1.0), ("last layer", "FG, K = 16, mean"): (36.0, 0.5),
                     ("last layer", "FG, K = 16, projected"): (30.0, 0.5), ("all layers", "FG, normal"): (20.0, 1.0)})
    combined = grading.combine_table(table)
    assert combined[["regime", "K", "lower"]].values.tolist() == [["last layer", 4, "within the spread"],
                                                                   ["last layer", 16, "projecting"]]
    assert combined["averaged (%)"].tolist() == [40.0, 36.0] and combined["± (sum of sds)"].tolist() == [2.0, 1.0]
    alike = grading.combine_table(table.assign(**{"± sd": 5.0}))   # the control: a wider spread tells neither apart
    assert set(alike["lower"]) == {"within the spread"}
    one = grading.combine_table(table.assign(**{"± sd": float("nan")}))
    assert set(one["lower"]) == {"one run"}
    assert grading.combine_table(table[table["regime"] == "all layers"]).empty   # no K variants there
    two = grading.combine_table(table.assign(runs=2))   # beyond the spread, but too few runs to count it
    assert two["lower"].tolist() == ["within the spread", "projecting, tentative (2 runs)"]
    three = grading.combine_table(table.assign(runs=3))   # the control: enough runs
    assert three["lower"].tolist() == ["within the spread", "projecting"]


def test_the_from_scratch_k_sweep_gives_each_k_its_error_at_its_best_rate():
    import pandas as pd
    from fglib.book import grading
    rows = []
    for k, lr_errors in {1: {1e-4: [30, 31], 2e-4: [28, 29]}, 4: {1e-3: [46, 47]}, 16: {3e-3: [20, 21]}}.items():
        for lr, errors in lr_errors.items():
            rows += [{"K": float(k), "lr": lr, "run": r, "status": "ran", "test_accuracy": 1 - e / 100,
                      "validation_loss": e / 10} for r, e in enumerate(errors)]
    rows.append({"K": 4.0, "lr": 3e-3, "run": -1, "status": "diverged"})
    errors = grading.k_scratch_errors(pd.DataFrame(rows))
    assert errors["K"].tolist() == [1, 4, 16]
    assert errors["test error (%)"].round(6).tolist() == [28.5, 46.5, 20.5]   # K = 1 at its best rate, 2e-4
    assert pd.isna(errors["against K = 1"].iloc[0]) and errors["against K = 1"].tolist()[1:] == ["higher", "lower"]
    near = pd.DataFrame(rows)   # the control: K = 4's runs moved to K = 1's errors
    near.loc[(near["K"] == 4) & (near["status"] == "ran"), "test_accuracy"] = [0.72, 0.71]
    assert grading.k_scratch_errors(near)["against K = 1"].tolist()[1:] == ["within the spread", "lower"]


class Stop(Exception):
    pass


class StoppedAfterOneRegime(RawTables):
    def save(self, name, table):
        super().save(name, table)
        if name == "finals.csv":   # a regime's sweep is saved curves first, then finals
            raise Stop


class Recorded(RawTables):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.saves = []

    def save(self, name, table):
        self.saves.append(name)
        super().save(name, table)


def test_regimes_stopped_after_the_first_resume_to_the_uninterrupted_sweep(mnist, cache, tmp_path):
    """sweep_regimes saves after each regime; started again after a stop, it runs only the regimes
    not saved and ends with the tables of a sweep that never stopped (runs are seeded)."""
    state, _ = pretrained(mnist, cache)
    regimes = ("all layers", "last layer")
    make = {r: (lambda s, r=r: finetune.fine_tune_model("mlp", state, r, seed=s)) for r in regimes}
    methods = {r: {"FG, normal": finetune.METHODS["FG, normal"]} for r in regimes}
    rates = {r: {"FG, normal": [1e-4]} for r in regimes}
    args = (mnist, methods, rates, 1, 12, 3, 0, 200)
    whole = finetune.sweep_regimes(RawTables("finetune", tmp_path / "whole", "cpu"), make, *args)
    with pytest.raises(Stop):
        finetune.sweep_regimes(StoppedAfterOneRegime("finetune", tmp_path / "stopped", "cpu"), make, *args)
    resumed_raw = Recorded("finetune", tmp_path / "stopped", "cpu")
    assert set(resumed_raw.read("finals.csv")["regime"]) == {"all layers"}
    resumed = finetune.sweep_regimes(resumed_raw, make, *args)
    assert resumed_raw.saves == ["curves.csv.gz", "finals.csv"]   # the second regime only
    stamps = ["time", "device", "torch", "threads"]
    for got, expected in zip(resumed, whole):
        pd.testing.assert_frame_equal(got.drop(columns=stamps, errors="ignore"),
                                      expected.drop(columns=stamps, errors="ignore"))


def test_two_runs_per_method_are_too_few_to_call_a_change_beyond_their_spread():
    """The reviewer's point: 'narrowed the gap beyond the runs' spread' rested on 2 runs per arm,
    one degree of freedom per sd. With 2 runs the rule says it cannot tell; the control, the same
    numbers from 5 runs, says narrowed."""
    from fglib.book import grading
    numbers = {("from scratch", "FG, normal"): (50.0, 1.0), ("from scratch", "backprop"): (15.0, 0.5),
               ("all layers", "FG, normal"): (30.0, 1.0), ("all layers", "backprop"): (14.0, 0.5),
               ("last layer", "FG, normal"): (32.0, 1.0), ("last layer", "backprop"): (15.0, 0.5),
               ("last layer", "FG, K = 16, mean"): (20.0, 1.0)}
    few = grading.finetune_gaps(at_best(numbers).assign(runs=2))
    assert grading.gap_change(few, "all layers") == "too few runs"
    many = grading.finetune_gaps(at_best(numbers).assign(runs=5))
    assert grading.gap_change(many, "all layers") == "narrowed"


def test_at_an_equal_memory_budget_the_lighter_methods_and_their_gap_to_lean_backprop():
    """The methods lighter than backprop in place, those (backprop aside) whose every run reached
    the target, and the fewest whole points by which a lighter method trailed; the control: a
    lean backprop lighter than every method leaves none lighter and no gap."""
    import math
    import pandas as pd
    from fglib.book import grading
    rows = [("FG, in place", 7.9, 50.3, "0/2"), ("MeZO", 11.6, 52.7, "0/2"), ("backprop, in place", 11.9, 17.1, "2/2"),
            ("backprop", 14.5, 17.1, "2/2"), ("FG, normal", 15.0, 48.0, "1/2"), ("FG, K = 4, mean", 15.5, 33.4, "2/2")]
    table = pd.DataFrame([{"regime": "all layers", "method": m, "test error (%)": e, "reached": r, "T / T_backprop": 1.0}
                          for m, _, e, r in rows] + [{"regime": "last layer", "method": "MeZO", "test error (%)": 1.0,
                                                      "reached": "2/2", "T / T_backprop": 1.0}])
    costs = pd.DataFrame([{"regime": "all layers", "method": m, "total (MiB)": mib} for m, mib, _, _ in rows]
                         + [{"regime": "all layers", "method": "inference", "total (MiB)": 1.0}])
    budget, numbers = grading.equal_memory_budget(table, costs)
    assert budget["method"].tolist() == [m for m, *_ in rows]                 # lightest first, inference left out
    assert numbers["lighter"] == ["FG, in place", "MeZO"]
    assert numbers["reached"] == ["FG, K = 4, mean"]                          # every run; backprop aside
    assert numbers["gap"] == 33.0                                             # 50.3 - 17.1, whole points down
    leaner = costs.assign(**{"total (MiB)": costs["total (MiB)"].where(costs["method"] != "backprop, in place", 1.5)})
    _, none = grading.equal_memory_budget(table, leaner)
    assert none["lighter"] == [] and math.isnan(none["gap"])
