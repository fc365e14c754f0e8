"""Nothing from a file or the network runs code or lands outside its folder, and a saved run is
checked when it is read (issue 50, security and saved runs). Each test has a control that shows
the attack or the damage is real: the old way of reading (torch.load with weights_only=False, a
fetch with no checks) falls for it."""
import http.server
import io
import json
import os
import pathlib
import threading
import time

import hypothesis
import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F

import fglib
from fglib import checkpoint as ck
from fglib.book import report

MARK = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "fglib-payload-ran"


class Payload:
    """Unpickling this runs code: it touches MARK."""
    def __reduce__(self):
        return (pathlib.Path.touch, (MARK,))


# checkpoints


def _logreg_run(mnist, path, iterations=6, **settings):
    model = fglib.build_model("logreg", seed=0)
    method = fglib.make_method(settings.pop("method", "fg"), model, F.cross_entropy, lr=settings.pop("lr", 2e-4),
                               seed=settings.pop("seed", 0), **settings.pop("method_kwargs", {}))
    data = {k: type(v)(v.x[:512], v.y[:512]) for k, v in mnist.items()}
    table = fglib.train(method, data, iterations, eval_every=3, progress=False, checkpoint=path,
                        batch_size=settings.pop("batch_size", 64), seed=settings.pop("data_seed", 0))
    return method, table


def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path):
    MARK.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    ck.save(path, {"done": 3, "rows": [Payload()]})
    with pytest.raises(ck.CheckpointError, match=r"evil\.pt.*could run code"):
        ck.load(path)
    assert not MARK.exists()
    buffer = io.BytesIO()   # the control: the old way of loading runs the payload
    torch.save({"rows": [Payload()]}, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=False)
    assert MARK.exists()
    MARK.unlink()


def test_runs_status_reads_a_parked_checkpoint_without_running_it(tmp_path):
    from fglib.book import runs
    MARK.unlink(missing_ok=True)
    path = tmp_path / "parked.pt"
    buffer = io.BytesIO()
    torch.save({"done": 5, "x": Payload()}, buffer)
    path.write_bytes(buffer.getvalue())   # a bare torch file, as an older fglib wrote, carrying a payload
    with pytest.raises(ck.CheckpointError, match="parked.pt"):
        runs.iterations_in(path)
    assert not MARK.exists()


@hypothesis.settings(max_examples=60, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(data=st.data())
def test_a_damaged_checkpoint_gives_its_saved_state_or_an_error_naming_it(tmp_path, data):
    path = tmp_path / "run.pt"
    state = {"done": 7, "weights": torch.arange(64, dtype=torch.float64), "rows": [{"loss": 0.5}]}
    ck.save(path, state)
    raw = bytearray(path.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="keep")]
    else:
        for i in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=64), label="flips"):
            raw[i] ^= data.draw(st.integers(1, 255), label="mask")
    path.write_bytes(bytes(raw))
    try:
        loaded = ck.load(path)
    except ck.CheckpointError as err:
        assert "run.pt" in str(err)
    else:
        assert loaded["done"] == 7 and torch.equal(loaded["weights"], state["weights"])


def test_a_changed_weight_is_caught_by_the_hash_and_was_silent_before(tmp_path):
    path = tmp_path / "run.pt"
    weights = torch.full((256,), 0.25, dtype=torch.float64)
    ck.save(path, {"done": 1, "weights": weights})
    raw = bytearray(path.read_bytes())
    at = bytes(raw).index(weights.numpy().tobytes())   # the tensor's bytes, stored as they are
    raw[at + 7] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ck.CheckpointError, match="SHA-256"):
        ck.load(path)
    payload = bytes(raw).partition(b"\n")[2]   # the control: torch alone loads other numbers without a word
    changed = torch.load(io.BytesIO(payload), weights_only=True)["weights"]
    assert not torch.equal(changed, weights)


@pytest.mark.parametrize("content, why", [(b"", "is empty"), (b"hello, not a checkpoint\n", "not an fglib checkpoint")])
def test_an_empty_or_text_file_is_named(tmp_path, content, why):
    path = tmp_path / "ck.pt"
    path.write_bytes(content)
    with pytest.raises(ck.CheckpointError, match=f"ck.pt.*{why}"):
        ck.load(path)


@pytest.mark.parametrize("change, named", [
    ({"seed": 1}, "seed: saved 0, now 1"), ({"lr": 1e-3}, "lr: saved 0.0002, now 0.001"),
    ({"method": "bp"}, "class: saved 'ForwardGradientDescent', now 'Backprop'"),
    ({"method_kwargs": {"direction": "rademacher"}}, "direction: saved 'normal', now 'rademacher'"),
    ({"method_kwargs": {"n_directions": 2}}, "n_directions: saved 1, now 2"),
    ({"batch_size": 32}, "batch_size: saved 64, now 32"), ({"data_seed": 3}, "data_seed: saved 0, now 3")])
def test_a_checkpoint_resumed_with_other_settings_is_refused_naming_them(mnist, tmp_path, change, named):
    path = tmp_path / "run.pt"
    _logreg_run(mnist, path)
    with pytest.raises(ck.CheckpointError, match="belongs to another run") as err:
        _logreg_run(mnist, path, iterations=9, **change)
    assert named in str(err.value)
    _logreg_run(mnist, path, iterations=9)   # the control: the same settings resume


def test_a_checkpoint_from_before_a_setting_existed_resumes_at_its_default_only(mnist, tmp_path):
    """fg's draw= came after checkpoints were written: one that records no draw ran the flat draw,
    so it resumes with draw='flat' and is refused with draw='blocks' (the control)."""
    from fglib import checkpoint as ck_io
    path = tmp_path / "run.pt"
    _logreg_run(mnist, path)
    state = ck_io.load(path)
    del state["settings"]["draw"]
    ck_io.save(path, state)
    ck_io.save(tmp_path / "copy.pt", state)
    _logreg_run(mnist, path, iterations=9)
    with pytest.raises(ck.CheckpointError, match="draw: saved 'nothing', now 'blocks'"):
        _logreg_run(mnist, tmp_path / "copy.pt", iterations=9, method_kwargs={"draw": "blocks"})


def test_a_checkpoint_of_a_different_training_set_size_is_refused(mnist, tmp_path):
    path = tmp_path / "run.pt"
    _logreg_run(mnist, path)
    model = fglib.build_model("logreg", seed=0)
    method = fglib.make_method("fg", model, F.cross_entropy, lr=2e-4, seed=0)
    data = {k: type(v)(v.x[:256], v.y[:256]) for k, v in mnist.items()}
    with pytest.raises(ck.CheckpointError, match="train_size: saved 512, now 256"):
        fglib.train(method, data, 9, progress=False, checkpoint=path)


def test_a_shorter_run_than_saved_is_refused_and_a_longer_one_resumes_bit_for_bit(mnist, tmp_path):
    path = tmp_path / "run.pt"
    _logreg_run(mnist, path, iterations=6)
    with pytest.raises(ck.CheckpointError, match="done 6 iterations, more than the 3 asked for"):
        _logreg_run(mnist, path, iterations=3)
    resumed, table = _logreg_run(mnist, path, iterations=9)
    straight, straight_table = _logreg_run(mnist, tmp_path / "straight.pt", iterations=9)
    for a, b in zip(resumed.params, straight.params):
        assert torch.equal(a, b)
    assert table[["iteration", "split", "loss"]].equals(straight_table[["iteration", "split", "loss"]])


def test_a_run_held_by_another_process_is_refused_at_once(mnist, tmp_path):
    path = tmp_path / "run.pt"
    with ck.lock(path):
        with pytest.raises(ck.CheckpointError, match="in use by another process"):
            _logreg_run(mnist, path)
    _logreg_run(mnist, path)   # the control: free again once released


def test_writers_at_once_leave_one_whole_checkpoint(tmp_path):
    path, errors = tmp_path / "run.pt", []

    def write(i):
        try:
            for _ in range(20):
                ck.save(path, {"done": i, "weights": torch.full((10_000,), float(i))})
        except Exception as err:   # noqa: BLE001 -- any failure is the test's failure
            errors.append(err)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = ck.load(path)
    assert not errors and torch.equal(state["weights"], torch.full((10_000,), float(state["done"])))
    assert not list(tmp_path.glob("*.tmp"))


# fetched results


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files` ({path: bytes}); '/drip' sends a byte every 0.3 s; '/nolength' sends
    its body with no Content-Length; '/huge' announces a body of 10**12 bytes."""
    files = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.split("/book/", 1)[1]
        if name not in self.files:
            self.send_error(404)
            return
        body = self.files[name]
        self.send_response(200)
        if name.endswith("drip"):
            self.end_headers()
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)
            return
        if name.endswith("huge"):
            self.send_header("Content-Length", str(10 ** 12))
        elif not name.endswith("nolength"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # the folder fetched into is named relative, as the chapters name it
    Handler.files = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/book", Handler.files
    httpd.shutdown()


def publish(files, folder="results", **contents):
    """A results folder served: its files and an index of their hashes."""
    import hashlib
    index = {}
    for name, body in contents.items():
        name = name.replace("__", "/")
        files[f"{folder}/{name}"] = body
        index[name] = hashlib.sha256(body).hexdigest()
    files[f"{folder}/index.json"] = json.dumps(index).encode()
    return index


def test_a_good_index_is_fetched_and_kept(server, tmp_path):
    url, files = server
    publish(files, **{"mlp.json": b'{"R_f": 1.5}', "raw__mlp__runs.csv": b"a,b\n1,2\n"})
    out = tmp_path / "results"
    assert report.fetch_results(url, "results") == {"mlp": {"R_f": 1.5}}
    assert (out / "raw" / "mlp" / "runs.csv").read_bytes() == b"a,b\n1,2\n"
    assert set(json.loads((out / "index.json").read_text())) == {"mlp.json", "raw/mlp/runs.csv"}


@pytest.mark.parametrize("name", ["raw/../../escaped.json", "raw/../../../tmp/x", "/etc/passwd", "raw\\..\\x",
                                  "../x.json", "raw/a/../../../x", "raw/", "raw//x"])
def test_a_name_outside_the_folder_is_refused_and_nothing_is_written(server, tmp_path, name):
    import hashlib
    url, files = server
    files["deep/er/results/index.json"] = json.dumps({name: hashlib.sha256(b"x").hexdigest()}).encode()
    files[f"deep/er/results/{name}"] = b"x"
    out = tmp_path / "deep" / "er" / "results"
    with pytest.raises(ValueError, match="not a results file or a file under raw/"):
        report.fetch_results(url, "deep/er/results")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    control = pathlib.Path(out) / name   # the control: the old fetch wrote folder / name, which lands outside
    assert "raw/.." not in name or not control.resolve().is_relative_to(out.resolve())


def test_a_file_that_does_not_match_its_hash_is_refused(server, tmp_path):
    url, files = server
    publish(files, **{"mlp.json": b'{"R_f": 1.5}'})
    files["results/mlp.json"] = b'{"R_f": 0.5}'
    with pytest.raises(ValueError, match="mlp.json does not match the SHA-256"):
        report.fetch_results(url, "results")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("kind", ["huge", "nolength"])
def test_a_file_over_the_size_cap_is_refused(server, tmp_path, kind):
    url, files = server
    publish(files, **{f"raw__{kind}": b"0" * 5000})
    with pytest.raises(ValueError, match="bytes a results file may hold|more than the 4,096"):
        report.fetch_results(url, "results", max_bytes=4096)
    if kind == "nolength":   # the control: the same file under a larger cap is fetched
        assert report.fetch_results(url, "results", max_bytes=10 ** 6) == {}
        assert (tmp_path / "results" / "raw" / kind).read_bytes() == b"0" * 5000


def test_a_server_that_drips_is_cut_off_at_the_deadline(server, tmp_path):
    url, files = server
    publish(files, **{"raw__drip": b"0123456789" * 2})
    started = time.monotonic()
    with pytest.raises(ValueError, match="deadline"):
        report.fetch_results(url, "results", deadline=1.0)
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("index, why", [(b"[\"mlp.json\"]", "not a map of file names"), (b"not json", "is not JSON"),
                                        (b"3", "not a map"), (b'{"mlp.json": 5}', "is not one")])
def test_a_malformed_index_is_named(server, tmp_path, index, why):
    url, files = server
    files["results/index.json"] = index
    with pytest.raises(ValueError, match=f"index.json.*{why}|{why}"):
        report.fetch_results(url, "results")


# evaluation


def test_evaluate_runs_in_eval_mode_and_leaves_the_model_as_it_was(mnist):
    """Dropout: the validation loss is the whole network's, the same every call (the old evaluate,
    the control, gave a random sub-network's); BatchNorm: the running statistics stay as they were;
    the model's training flag is restored."""
    from torch import nn
    split = type(mnist["validation"])(mnist["validation"].x[:500], mnist["validation"].y[:500])
    torch.manual_seed(0)
    dropout = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))
    dropout.train()
    first, second = fglib.evaluate(dropout, split), fglib.evaluate(dropout, split)
    assert first == second and dropout.training
    dropout.eval()
    assert fglib.evaluate(dropout, split) == first
    dropout.train()
    with torch.no_grad():   # the control: the old way, in training mode, a different loss each time
        losses = {float(F.cross_entropy(dropout(split.x), split.y)) for _ in range(3)}
    assert len(losses) == 3 and first[0] not in losses
    norm = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)).train()
    before = norm[2].running_mean.clone()
    fglib.evaluate(norm, split)
    assert torch.equal(norm[2].running_mean, before) and norm.training


def test_a_batchnorm_model_trains_past_the_label_check_and_an_empty_split_is_named(mnist):
    from torch import nn
    small = {k: type(v)(v.x[:256], v.y[:256]) for k, v in mnist.items()}
    torch.manual_seed(0)
    norm = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    method = fglib.make_method("bp", norm, F.cross_entropy, lr=0.01)
    table = fglib.train(method, small, 3, eval_every=3, progress=False)   # the one-example check ran in eval mode
    assert table["iteration"].max() == 3
    empty = type(small["validation"])(small["validation"].x[:0], small["validation"].y[:0])
    with pytest.raises(ValueError, match="split is empty"):
        fglib.evaluate(norm, empty)


# raw tables


def _table():
    import pandas as pd
    return pd.DataFrame({"method": ["backprop", "forward gradient"] * 20, "iteration": range(40),
                         "loss": [0.5234 + i / 1000 for i in range(40)], "accuracy": [float("nan"), 0.9] * 20})


def test_a_table_whose_write_fails_leaves_the_earlier_one(tmp_path, monkeypatch):
    import pandas as pd
    from fglib.book.runs import read_csv, write_csv
    path = tmp_path / "t.csv.gz"
    write_csv(_table(), path)
    before = path.read_bytes()

    def full_disk(self, *args, **kwargs):
        with open(args[0], "wb") as f:
            f.write(b"half a ta")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_csv(_table().assign(loss=0.0), path)
    monkeypatch.undo()
    assert path.read_bytes() == before and read_csv(path).equals(read_csv(path))
    assert not [p for p in tmp_path.iterdir() if p.name != "t.csv.gz"]   # no temporary file left


@hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(cut=st.floats(0.05, 0.999), gz=st.booleans())
def test_a_raw_table_cut_short_gives_its_rows_or_an_error_naming_it(tmp_path, cut, gz):
    """A CSV(.gz) cut anywhere reads as the saved rows it still holds whole, or raises naming the
    file; never other numbers (the issue's case: 0.5 for 0.5234 and no method)."""
    import pandas as pd
    from fglib.book.runs import read_csv, write_csv
    path = tmp_path / ("t.csv.gz" if gz else "t.csv")
    saved = _table()
    write_csv(saved, path)
    raw = path.read_bytes()
    path.write_bytes(raw[:max(1, int(len(raw) * cut))])
    try:
        table = read_csv(path)
    except ValueError as err:
        assert path.name in str(err)
    else:
        pd.testing.assert_frame_equal(table, saved.iloc[:len(table)].astype(table.dtypes.to_dict()), check_exact=False,
                                      rtol=1e-9)


def test_the_issues_cut_row_is_refused_and_was_silent_before(tmp_path):
    import pandas as pd
    from fglib.book.runs import read_csv
    path = tmp_path / "t.csv"
    path.write_text("method,loss\nbackprop,0.5234\nforward gradient,0.5")   # the last row cut after "0.5"
    assert pd.read_csv(path)["loss"].iloc[-1] == 0.5   # the control: pandas reads other numbers silently
    with pytest.raises(ValueError, match="t.csv ends in a row cut short"):
        read_csv(path)
    path.write_text("method,loss\nbackprop,0.5234\nforward gradient,0.5\n")   # the same rows, whole: read
    assert read_csv(path)["loss"].tolist() == [0.5234, 0.5]


def test_a_listed_file_missing_is_an_error_even_where_a_missing_folder_is_allowed(server, tmp_path):
    """load_results(missing_ok=True) once gave {} when one listed file was missing: a folder that is
    not there at all is empty (the control), a folder with a hole in it is an error naming the file."""
    url, files = server
    publish(files, **{"mlp.json": b'{"R_f": 1.5}', "cnn.json": b'{"R_f": 0.9}'})
    del files["results/cnn.json"]
    with pytest.raises(FileNotFoundError, match="lists cnn.json, but .*cnn.json could not be read \\(HTTP 404\\)"):
        report.fetch_results(url, "results", missing_ok=True)
    assert report.fetch_results(url, "nothing", missing_ok=True) == {}
    assert not (tmp_path / "results").exists()


def test_max_runs_zero_trains_none_and_a_negative_count_is_refused(mnist, tmp_path):
    from fglib.book import runs
    plan = runs.PLANS["cnn"].smaller(model="logreg", runs=2, iterations=4, eval_points=2, train_every=2)
    with pytest.raises(ValueError, match="max_runs"):
        runs.run_missing(plan, mnist, tmp_path, tmp_path / "ck", progress=False, max_runs=-1)
    assert runs.run_missing(plan, mnist, tmp_path, tmp_path / "ck", progress=False, max_runs=0) == []
    assert len(runs.pending(plan, tmp_path)) == 4   # the control: nothing was trained


@pytest.mark.parametrize("name", ["fg", "bp", "fd"])
def test_an_empty_batch_is_refused_rather_than_stepped_on(name):
    """An empty batch has no loss: backprop would step on NaN and fglib's engine on a loss of 0
    (issue 50). Every method refuses it, naming x; the control, one example, steps."""
    model = fglib.build_model("logreg", seed=0)
    method = fglib.make_method(name, model, F.cross_entropy, lr=0.1, **({} if name == "bp" else {"seed": 0}))
    x, y = torch.randn(5, 1, 28, 28), torch.arange(5)
    with pytest.raises(ValueError, match="x is an empty batch"):
        method.step(x[:0], y[:0])
    before = [p.detach().clone() for p in model.parameters()]
    method.step(x[:1], y[:1])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def book_command(*args):
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, str(root / "tools" / "book.py"), *args], capture_output=True, text=True,
                          timeout=300, cwd=root)


def test_the_command_line_refuses_a_method_the_plan_lacks_and_a_timing_of_nothing():
    """`runs cnn --methods xyz --status` reported '5 of 5 runs left' of runs that can never exist, and
    `timings --processes 0` did nothing with exit code 0 (issue 50). Both are refused now, naming the
    argument; the control, the plan's own method, reports its runs."""
    wrong = book_command("runs", "cnn", "--methods", "xyz", "--status")
    assert wrong.returncode != 0 and "plan 'cnn' has no method 'xyz'" in wrong.stderr
    right = book_command("runs", "cnn", "--methods", "fg", "--status")
    assert right.returncode == 0 and "runs left" in right.stdout
    none = book_command("timings", "cnn", "--processes", "0")
    assert none.returncode != 0 and "--processes 0" in none.stderr


@hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(cut=st.integers(0, 200), where=st.sampled_from(["result", "record"]))
def test_a_json_file_cut_short_gives_its_data_or_an_error_naming_it(tmp_path, cut, where):
    """A chapter's results or a run's record half-written: load_results and the run records give
    the saved data or a ValueError naming the file (they raised a bare JSONDecodeError)."""
    import json
    from fglib.book import report, runs
    saved = {"iterations_done": 70000, "minutes": 12.5, "method": "forward gradient"}
    path = tmp_path / "mlp.json" if where == "result" else runs.raw_folder(tmp_path, "mlp") / "fg-seed0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(saved)
    path.write_text(text[:cut])
    try:
        got = report.load_results(tmp_path)["mlp"] if where == "result" else runs.load_records(tmp_path, "mlp").iloc[0].to_dict()
    except ValueError as err:
        assert path.name in str(err) and cut < len(text)
    else:
        assert got == saved
