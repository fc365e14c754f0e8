"""Long experiments as runs that survive a stop (fglib.book.runs): each run saved raw as it
finishes, finished runs skipped, an interrupted run resumed from its checkpoint to the same
result as one that never stopped."""
import pandas as pd
import pytest

import fglib

from fglib.book import runs

PLAN = runs.PLANS["cnn"].smaller(model="logreg", runs=2, iterations=40, eval_points=5, train_every=10)


def test_each_run_is_saved_raw_and_a_second_call_trains_nothing(mnist, tmp_path):
    assert len(runs.pending(PLAN, tmp_path)) == 4
    trained = runs.run_missing(PLAN, mnist, tmp_path, tmp_path / "ck", progress=False, max_runs=3)
    assert len(trained) == 3 and runs.pending(PLAN, tmp_path) == [(1, 1, "fg")]
    runs.run_missing(PLAN, mnist, tmp_path, tmp_path / "ck", progress=False)
    assert runs.pending(PLAN, tmp_path) == [] and runs.run_missing(PLAN, mnist, tmp_path, tmp_path / "ck") == []
    table = runs.load_runs(tmp_path, "cnn")
    assert list(table.columns) == ["experiment", "model", "method", "lr", "seed", "run", "iteration", "time", "split",
                                   "loss", "accuracy"]
    assert set(table["split"]) == {"train", "validation", "test"} and set(table["method"]) == {"backprop",
                                                                                               "forward gradient"}
    evaluated = table[(table.split == "validation") & (table.method == "backprop") & (table.run == 0)]
    assert set(evaluated.iteration) == set(runs.eval_schedule(40, 5)) and len(list(tmp_path.glob("ck/*/*.pt"))) == 4
    records = runs.load_records(tmp_path, "cnn")
    assert (records["iterations_done"] == 40).all() and records["device"].str.startswith("CPU").all()


def _stop_fg_after(monkeypatch, steps, plan, mnist, checkpoint):
    """Run fg on `plan` until its step number steps + 1 raises (a stop), checkpointing every step."""
    step, calls = fglib.ForwardGradientDescent.step, []

    def stop(self, x=None, y=None):
        calls.append(1)
        if len(calls) == steps + 1:
            raise KeyboardInterrupt
        return step(self, x, y)
    with monkeypatch.context() as patch:
        patch.setattr(fglib.ForwardGradientDescent, "step", stop)
        with pytest.raises(KeyboardInterrupt):
            runs.train_one(plan, mnist, "fg", 0, checkpoint, progress=False, checkpoint_every=1e-9)


def test_an_interrupted_run_resumes_to_the_same_rows(mnist, tmp_path, monkeypatch):
    """A run stopped after 23 steps (its checkpoint, written at every step here, left behind) and
    resumed gives the rows of a run that never stopped; a plan asking for more iterations than a
    saved run has re-runs it."""
    plan = PLAN.smaller(runs=1, methods=("fg",))
    straight = tmp_path / "straight"
    runs.run_missing(plan, mnist, straight, straight / "ck", progress=False)
    stopped = tmp_path / "stopped"
    checkpoint = stopped / "ck" / "cnn" / "fg-seed0.pt"
    _stop_fg_after(monkeypatch, 23, plan, mnist, checkpoint)
    assert checkpoint.exists()
    runs.run_missing(plan, mnist, stopped, stopped / "ck", progress=False)
    a, b = runs.load_runs(straight, "cnn"), runs.load_runs(stopped, "cnn")
    pd.testing.assert_frame_equal(a.drop(columns="time"), b.drop(columns="time"))
    assert runs.pending(plan.smaller(iterations=80), straight) == [(0, 0, "fg")]


def test_a_longer_plan_extends_finished_runs_as_if_they_had_run_straight(mnist, tmp_path):
    """Run to 40, then the plan made 80 long: the training losses and the final evaluation equal
    those of a run straight to 80 (the decay depends on the iteration only); the control, a
    finished run whose checkpoint is gone, starts again from iteration 1."""
    plan = PLAN.smaller(runs=1, methods=("fg",), train_every=1)
    longer = plan.smaller(iterations=80)
    runs.run_missing(longer, mnist, tmp_path / "straight", tmp_path / "straight" / "ck", progress=False)
    runs.run_missing(plan, mnist, tmp_path / "ext", tmp_path / "ext" / "ck", progress=False)
    runs.run_missing(longer, mnist, tmp_path / "ext", tmp_path / "ext" / "ck", progress=False)
    a, b = runs.load_runs(tmp_path / "straight", "cnn"), runs.load_runs(tmp_path / "ext", "cnn")
    train = lambda t: t[t.split == "train"].reset_index(drop=True)[["iteration", "loss"]]
    pd.testing.assert_frame_equal(train(a), train(b))
    last = lambda t: t[(t.split == "validation") & (t.iteration == 80)]["loss"].tolist()
    assert last(a) == last(b) and len(last(a)) == 1
    assert set(b[b.split == "validation"].iteration) - set(a[a.split == "validation"].iteration)  # the first grid
    (tmp_path / "ext" / "ck" / "cnn" / "fg-seed0.pt").unlink()
    assert runs.run_missing(longer.smaller(iterations=90), mnist, tmp_path / "ext", tmp_path / "ext" / "ck",
                            progress=False) == [(0, 0, "fg")]
    again = runs.load_runs(tmp_path / "ext", "cnn")
    assert (again[again.split == "train"].iteration.diff().dropna() > 0).all()   # started again: one pass


def test_timing_rounds_are_saved_raw_per_process_and_the_spread_is_reported(mnist, tmp_path):
    from fglib.book import grading
    plan = PLAN.smaller(methods=("fg", "bp"))
    for _ in range(3):   # three processes' worth (here one process, three times)
        runs.save_timings(plan, tmp_path, runs.measure_steps(plan, mnist, repeats=6, warmup=1))
    rounds = runs.load_timings(tmp_path, "cnn")
    assert sorted(rounds["process"].unique()) == [0, 1, 2] and len(rounds) == 3 * 6 * 3
    assert runs.load_runs(tmp_path, "cnn").empty     # timing rounds are not runs
    assert set(rounds["name"]) == {"base", "forward gradient", "backprop"} and rounds["device"].str.startswith("CPU").all()
    spread = grading.step_ratio_spread(rounds)
    assert len(spread["per process"]) == 3 and spread["sd between"] >= 0 and spread["mean"] > 0


def test_step_memory_counts_the_weights_and_the_gradients_held_between_steps(mnist):
    """The paper's sense: weights included. For the logistic regression the weights are
    7,850 float32 (31,400 bytes), and both methods keep a gradient of that size between steps
    (plain SGD has no other state); the control, the MLP, holds over a hundred times more.
    Both free their old gradient (zero_grad(set_to_none=True)) before making the new one (backprop
    before its backward pass, forward gradient before it draws v), so for both the total is less
    than weights + held + step peak, by about the gradient."""
    table = runs.measure_network_memory(mnist, [("logistic regression", "logreg", {}), ("MLP", "mlp", {})],
                                        methods=("fg", "bp"))
    logreg, mlp = (table[table["model"] == m].set_index("method") for m in ("logreg", "mlp"))
    assert (logreg["weights"] == 7850 * 4).all() and (logreg["held"] == 7850 * 4).all()
    assert (logreg["step peak"] > 0).all()
    summed = mlp["weights"] + mlp["held"] + mlp["step peak"]
    assert mlp.loc["forward gradient", "total"] <= summed["forward gradient"] - mlp.loc["forward gradient", "held"] / 2
    assert mlp.loc["backprop", "total"] <= summed["backprop"] - mlp.loc["backprop", "held"] / 2
    assert (mlp["weights"] > 100 * logreg["weights"]).all()


def test_a_plan_reads_its_models_memory_from_the_one_table_over_every_network(tmp_path, mnist):
    """Each step's memory is measured once (raw/networks/memory.csv); a plan's chapter reads its
    model's rows from there, and another model's rows are the control that must not appear."""
    table = runs.measure_network_memory(mnist, [("logistic regression", "logreg", {}), ("MLP", "mlp", {})],
                                        methods=("fg", "bp"))
    runs.save_table(tmp_path, "networks", "memory.csv", table)
    memory = runs.load_plan(PLAN.smaller(model="mlp"), tmp_path)["memory"]
    assert set(memory["model"]) == {"mlp"} and len(memory) == 2
    assert set(runs.load_plan(PLAN.smaller(model="cnn"), tmp_path)["memory"]["model"]) == set()


def test_timing_processes_are_separate_python_processes(tmp_path, monkeypatch):
    """time_in_processes starts a fresh interpreter per process: their rounds are numbered by
    process, appended in turn."""
    from conftest import data_folder
    monkeypatch.setenv("FGLIB_DATA", data_folder())
    plan = PLAN.smaller(methods=("fg", "bp"))
    runs.time_in_processes(plan, tmp_path, processes=2, repeats=3)
    rounds = runs.load_timings(tmp_path, "cnn")
    assert sorted(rounds["process"].unique()) == [0, 1] and len(rounds) == 2 * 3 * 3


def test_a_background_start_without_the_data_stops_in_the_foreground(tmp_path, monkeypatch):
    """`tools/book.py runs <plan> --background` looks for the data before it detaches: a missing
    data folder is an error on the terminal that names the folder, and no process starts (a
    background run would only have said so in its log)."""
    import importlib.util
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("book_tool", ROOT / "tools" / "book.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / "book").mkdir()
    monkeypatch.setattr(tool, "ROOT", tmp_path)   # its log goes to tmp_path/book/.checkpoints, not the book's
    monkeypatch.chdir(tmp_path)   # long_runs moves into book/; put the working folder back after
    report = {"left": 1, "runs": 2, "in progress": {}, "not parked": {}, "minutes left": None, "minutes per run": None}
    monkeypatch.setattr(runs, "progress_report", lambda plan, folder, **where: report)
    missing = FileNotFoundError(f"could not find or download MNIST: the four IDX files should be in {tmp_path}")
    monkeypatch.setattr(fglib, "load_data", lambda name: (_ for _ in ()).throw(missing))
    started = []
    monkeypatch.setattr(tool.subprocess, "Popen", lambda *a, **k: started.append(a) or type("Job", (), {"pid": 1}))
    with pytest.raises(SystemExit, match=f"cnn: no run started: could not find .* in {tmp_path}"):
        tool.long_runs("cnn", background=True, max_runs=1, methods="bp")
    assert started == []
    monkeypatch.setattr(fglib, "load_data", lambda name: {"train": None})   # the control: data found, one start
    tool.long_runs("cnn", background=True, max_runs=1, methods="bp")
    assert len(started) == 1 and (tmp_path / "book" / ".checkpoints" / "cnn-bp.log").exists()


def test_a_resumed_runs_minutes_count_every_sitting(mnist, tmp_path):
    """A run's record says how long the whole run took: the wall-clock seconds saved in its
    checkpoint carry over to the sitting that resumes it (control: the run trained straight
    through counts only its own seconds)."""
    import time
    from fglib import checkpoint as ck
    plan = PLAN.smaller(runs=1, methods=("bp",))
    path = tmp_path / "ck.pt"
    runs.train_one(plan.smaller(iterations=20), mnist, "bp", 0, path, progress=False)
    state = ck.load(path)
    assert 0 < state["elapsed"] <= state["wall"]
    ck.save(path, {**state, "wall": 1000.0})
    started = time.monotonic()
    resumed = runs.train_one(plan, mnist, "bp", 0, path, progress=False)
    assert 1000.0 < resumed.attrs["wall_seconds"] <= 1000.0 + time.monotonic() - started
    straight = runs.train_one(plan, mnist, "bp", 0, tmp_path / "other.pt", progress=False)
    assert straight.attrs["wall_seconds"] < 1000.0


def test_a_parked_run_resumes_on_a_fresh_clone_to_the_same_rows(mnist, tmp_path, monkeypatch):
    """A sitting stops after 23 steps and parks its checkpoint (the copy kept in git); the next
    sitting, on a fresh clone without local checkpoints, resumes from the parked copy: 17 steps,
    not 40 (the control, without the parked copy, starts again), the rows of a run that never
    stopped, and the parked copy deleted once the run is saved."""
    plan = PLAN.smaller(runs=1, methods=("fg",))
    straight = tmp_path / "straight"
    runs.run_missing(plan, mnist, straight, straight / "ck", progress=False)
    first, fresh, parked = tmp_path / "first", tmp_path / "fresh", tmp_path / "parked"
    _stop_fg_after(monkeypatch, 23, plan, mnist, runs.checkpoint_file(first / "ck", plan, "fg", 0))
    assert runs.progress_report(plan, fresh, first / "ck", parked)["not parked"] == {"fg-seed0": 23}
    assert runs.park(plan, fresh, first / "ck", parked) == {"fg-seed0": 23}
    assert runs.progress_report(plan, fresh, first / "ck", parked)["not parked"] == {}
    assert runs.progress_report(plan, fresh, fresh / "ck", parked)["in progress"] == {"fg-seed0": 23}
    step, calls = fglib.ForwardGradientDescent.step, []
    counted = lambda self, x=None, y=None: calls.append(1) or step(self, x, y)
    monkeypatch.setattr(fglib.ForwardGradientDescent, "step", counted)
    runs.run_missing(plan, mnist, fresh, fresh / "ck", progress=False, parked=parked)
    assert len(calls) == 40 - 23 and not runs.checkpoint_file(parked, plan, "fg", 0).exists()
    a, b = runs.load_runs(straight, "cnn"), runs.load_runs(fresh, "cnn")
    pd.testing.assert_frame_equal(a.drop(columns="time"), b.drop(columns="time"))
    calls.clear()
    runs.run_missing(plan, mnist, tmp_path / "control", tmp_path / "control" / "ck", progress=False, parked=parked)
    assert len(calls) == 40


def test_parking_keeps_the_further_copy(mnist, tmp_path, monkeypatch):
    """park copies a local checkpoint only over a parked one that has done fewer iterations, and a
    run starts from the parked copy only where it is further on than the local checkpoint."""
    plan = PLAN.smaller(runs=1, methods=("fg",))
    local, parked = tmp_path / "ck", tmp_path / "parked"
    _stop_fg_after(monkeypatch, 10, plan, mnist, runs.checkpoint_file(local, plan, "fg", 0))
    assert runs.park(plan, tmp_path, local, parked) == {"fg-seed0": 10}
    _stop_fg_after(monkeypatch, 5, plan, mnist, runs.checkpoint_file(tmp_path / "behind", plan, "fg", 0))
    assert runs.park(plan, tmp_path, tmp_path / "behind", parked) == {"fg-seed0": 10}   # not overwritten
    behind = runs.checkpoint_file(tmp_path / "behind", plan, "fg", 0)
    assert runs.copy_if_further(runs.checkpoint_file(parked, plan, "fg", 0), behind) == 10
    assert runs.park(plan, tmp_path, tmp_path / "none", tmp_path / "empty") == {}


def test_a_run_resumed_on_another_device_names_both(mnist, tmp_path, monkeypatch):
    """A run parked on one machine and finished on another (a CPU sitting, then a GPU one) says
    so in its record: both devices in order, and the iteration each sitting started at; the
    control, a run that never stopped, names one device."""
    import importlib
    loop = importlib.import_module("fglib.train")   # the module (fglib.train is also its function)
    plan = PLAN.smaller(runs=1, methods=("fg",))
    monkeypatch.setattr(loop, "device_name", lambda device: "machine A")
    _stop_fg_after(monkeypatch, 23, plan, mnist, runs.checkpoint_file(tmp_path / "ck", plan, "fg", 0))
    monkeypatch.setattr(loop, "device_name", lambda device: "machine B")
    runs.run_missing(plan, mnist, tmp_path, tmp_path / "ck", progress=False)
    record = runs.load_records(tmp_path, "cnn").iloc[0]
    assert record["device"] == "machine A then machine B"
    assert record["sittings"] == [{"device": "machine A", "from": 0}, {"device": "machine B", "from": 23}]
    runs.run_missing(plan, mnist, tmp_path / "straight", tmp_path / "straight" / "ck", progress=False)
    assert runs.load_records(tmp_path / "straight", "cnn").iloc[0]["device"] == "machine B"


def test_a_run_finished_elsewhere_drops_its_parked_copy(mnist, tmp_path, monkeypatch):
    """A run parked here and finished elsewhere (a GPU chunk, whose tarball cannot delete a file)
    leaves its parked copy behind; drop_parked deletes it once the run is saved here, and keeps
    the copy of a run not saved yet (the control)."""
    import shutil
    plan = PLAN.smaller(runs=2, methods=("fg",))
    local, parked = tmp_path / "ck", tmp_path / "parked"
    _stop_fg_after(monkeypatch, 5, plan, mnist, runs.checkpoint_file(local, plan, "fg", 0))
    runs.park(plan, tmp_path, local, parked)
    shutil.copyfile(runs.checkpoint_file(parked, plan, "fg", 0), runs.checkpoint_file(parked, plan, "fg", 1))
    runs.run_missing(plan.smaller(runs=1), mnist, tmp_path, tmp_path / "elsewhere", progress=False)
    assert runs.drop_parked(plan, tmp_path, parked) == [runs.checkpoint_file(parked, plan, "fg", 0)]
    assert not runs.checkpoint_file(parked, plan, "fg", 0).exists()
    assert runs.checkpoint_file(parked, plan, "fg", 1).exists()
