"""The training loop: reproducible under a seed, loud when a run diverges; the decay."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fglib
import fglib.book


def test_learning_rate_decay_values():
    assert fglib.learning_rate(0, 0.1) == 0.1
    assert fglib.learning_rate(10_000, 0.1) == pytest.approx(0.1 / math.e)
    assert fglib.learning_rate(5000, 2e-4) == pytest.approx(2e-4 * math.exp(-0.5))


def test_optimizer_follows_the_decay(mnist):
    method = fglib.make_method("bp", fglib.build_model("logreg", seed=0), F.cross_entropy, lr=0.1)
    fglib.train(method, mnist, iterations=50, eval_every=50, progress=False)
    assert method.optimizer.param_groups[0]["lr"] == pytest.approx(fglib.learning_rate(50, 0.1))


def curve(mnist, method, seed):
    model = fglib.build_model("logreg", seed=seed)
    m = fglib.make_method(method, model, F.cross_entropy, lr=1e-3, seed=seed)
    return fglib.train(m, mnist, iterations=30, eval_every=10, seed=seed, progress=False)["loss"].tolist()


@pytest.mark.parametrize("method", ["fg", "bp"])
def test_same_seed_same_curve_other_seed_other_curve(mnist, method):
    assert curve(mnist, method, 0) == curve(mnist, method, 0)
    assert curve(mnist, method, 0) != curve(mnist, method, 1)


def test_table_is_tidy(mnist):
    m = fglib.make_method("fg", fglib.build_model("logreg"), F.cross_entropy, lr=1e-3)
    df = fglib.train(m, mnist, iterations=20, eval_every=10, progress=False)
    assert list(df.columns) == ["iteration", "time", "split", "loss", "accuracy"]
    assert df[df.split == "train"].accuracy.isna().all() and df[df.split == "validation"].accuracy.between(0, 1).all()
    assert (df[df.split == "train"].iteration.tolist() == list(range(1, 21)))
    assert df[df.split == "validation"].iteration.tolist() == [0, 10, 20]
    assert df.time.is_monotonic_increasing


def test_an_evaluation_grid_without_iteration_0_evaluates_only_where_asked(mnist):
    # a regression: a grid without 0 once fell into the test-function branch, model(None)
    m = fglib.make_method("bp", fglib.build_model("logreg", seed=0), F.cross_entropy, lr=1e-3)
    df = fglib.train(m, mnist, iterations=20, eval_at=[10, 20], progress=False)
    assert df[df.split == "validation"].iteration.tolist() == [10, 20]


def test_diverging_run_raises(mnist):
    m = fglib.make_method("fg", fglib.build_model("mlp", seed=0), F.cross_entropy, lr=1e3)
    with pytest.raises(FloatingPointError, match="smaller learning rate"):
        fglib.train(m, mnist, iterations=200, progress=False)


def test_test_function_runs_follow_the_method():
    df = fglib.book.run_function("rosenbrock", lr=5e-4, runs=2, iterations=50)
    bp = df[df.method == "backprop"]
    # backprop is deterministic: both runs follow the same path; forward gradient runs differ
    assert bp[bp.run == 0].loss.tolist() == bp[bp.run == 1].loss.tolist()
    fg = df[df.method == "forward gradient"]
    assert fg[fg.run == 0].loss.tolist() != fg[fg.run == 1].loss.tolist()
    assert {"x", "y"} <= set(df.columns)


def test_a_diverging_run_can_stop_and_say_when(mnist):
    """on_diverge='stop' keeps the finite rows and records where the loss stopped being finite."""
    m = fglib.make_method("fg", fglib.build_model("mlp", seed=0), F.cross_entropy, lr=1e3)
    df = fglib.train(m, mnist, iterations=200, progress=False, on_diverge="stop")
    assert df.attrs["diverged_at"] is not None and df["iteration"].max() < df.attrs["diverged_at"]
    assert df["loss"].map(math.isfinite).all()


def test_diverged_test_function_runs_are_counted():
    df = fglib.book.run_function("beale", lr=10.0, runs=2, iterations=50, methods=("fg",))
    assert df.groupby("run")["diverged"].first().all()
    summary = fglib.book.experiments.function_summary({"beale": df})
    assert summary["runs that diverged"].tolist() == [2] and summary["final loss, median"].isna().all()


RESUMABLE = {"fg": {}, "fg, momentum": {"optimizer": "momentum"}, "bp, momentum": {"optimizer": "momentum"},
             "fg_a": {}, "fd_inplace": {}, "fg_inplace": {}}


@pytest.mark.parametrize("case", RESUMABLE)
def test_a_run_stopped_and_resumed_is_bit_identical_to_one_that_never_stopped(mnist, tmp_path, case, monkeypatch):
    """2N steps straight, against N steps, a stop (a fresh process would build the same objects
    anew) and N more from the checkpoint: the same weights bit for bit and the same table."""
    name, kwargs = case.split(",")[0], RESUMABLE[case]

    def fresh():
        model = fglib.build_model("mlp", seed=4, width=16)
        return model, fglib.make_method(name, model, F.cross_entropy, lr=1e-2, seed=4, **kwargs)

    def run(method, iterations, checkpoint=None):
        return fglib.train(method, mnist, iterations=iterations, eval_every=5, seed=4, progress=False,
                           eval_splits=("validation", "test"), checkpoint=checkpoint)

    straight_model, straight = fresh()
    want = run(straight, 20)
    path = tmp_path / "run.pt"
    run(fresh()[1], 10, path)                                  # stops after 10 steps
    resumed_model, resumed = fresh()
    got = run(resumed, 20, path)                               # resumes at 11
    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    columns = ["iteration", "split", "loss", "accuracy"]
    assert got[columns].equals(want[columns]) and set(got["split"]) == {"train", "validation", "test"}
    # the control: a resume that forgot one piece of state (here the data order) must differ
    monkeypatch.setattr(fglib.data.BatchSampler, "load_state_dict", lambda self, state: None)
    run(fresh()[1], 10, tmp_path / "forgetful.pt")
    assert not run(fresh()[1], 20, tmp_path / "forgetful.pt")[columns].equals(want[columns])


def test_a_dropout_run_resumes_bit_for_bit_with_torchs_global_generator_saved(mnist, tmp_path, monkeypatch):
    """Dropout draws its masks from torch's global generator, which a fresh process seeds anew:
    the checkpoint carries its state. Control: a resume that skips restoring it differs."""
    def fresh():
        torch.manual_seed(4)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10))
        return model, fglib.make_method("bp", model, F.cross_entropy, lr=1e-1)

    def run(method, iterations, checkpoint=None):
        return fglib.train(method, mnist, iterations=iterations, eval_every=5, seed=4, progress=False,
                           checkpoint=checkpoint)

    straight_model, straight = fresh()
    want = run(straight, 20)
    for name, restore in [("run.pt", True), ("forgetful.pt", False)]:
        if not restore:
            monkeypatch.setattr(sys.modules["fglib.train"], "set_global_rng", lambda state: None)
        run(fresh()[1], 10, tmp_path / name)
        resumed_model, resumed = fresh()
        got = run(resumed, 20, tmp_path / name)
        same = all(torch.equal(a, b) for a, b in zip(straight_model.parameters(), resumed_model.parameters()))
        assert same == restore and got["loss"].equals(want["loss"]) == restore


def test_initial_gradients_are_the_gradient_of_each_seeds_untrained_network(mnist):
    """The norm is that of backprop's gradient through the same seed's network on the same images;
    the same seed gives the same number, another seed another; a bad argument is named."""
    table = fglib.book.experiments.initial_gradients("logreg", mnist, seeds=[0, 1, 0], n=100)
    model = fglib.build_model("logreg", seed=1)
    loss = F.cross_entropy(model(mnist["train"].x[:100]), mnist["train"].y[:100])
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    assert table.loc[1, "initial gradient norm"].item() == pytest.approx(expected, rel=1e-5)
    assert table.loc[1, "initial loss"].item() == pytest.approx(loss.item())
    norms = table["initial gradient norm"].to_numpy()
    assert norms[0] == norms[2] and norms[0] != norms[1]
    with pytest.raises(ValueError, match=r"\bn\b"):
        fglib.book.experiments.initial_gradients("logreg", mnist, seeds=[0], n=0)
