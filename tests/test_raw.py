"""A chapter's raw tables (fglib.book.raw.RawTables): smoke runs never touch the book's results,
a remeasure keeps nothing, and a set is measured whole."""
import pandas as pd

from fglib.book.grading import devices_said
from fglib.book.raw import RawTables


def table(n=3):
    return pd.DataFrame({"method": ["fg"] * n, "lr": [1e-3] * n, "run": range(n)})


def test_a_saved_table_reads_back_with_or_without_its_device_stamps(tmp_path):
    raw = RawTables("chapter", tmp_path, "cpu")
    assert raw.read("t.csv").empty and raw.lack(["t.csv"])
    raw.save("t.csv", table())
    pd.testing.assert_frame_equal(raw.read("t.csv"), table())
    stamped = raw.read("t.csv", stamps=True)
    assert set(stamped.columns) == {"method", "lr", "run", "device", "torch", "threads"}
    assert stamped["device"].str.startswith("CPU").all()
    assert (tmp_path / "raw" / "chapter" / "t.csv").exists()
    other = RawTables("other", tmp_path, "cpu")
    pd.testing.assert_frame_equal(other.read("t.csv", chapter="chapter"), table())


def test_a_smoke_run_writes_somewhere_else(tmp_path):
    smoke = RawTables("chapter", tmp_path, "cpu", smoke=True)
    smoke.save("t.csv", table())
    assert not (tmp_path / "raw").exists() and not smoke.read("t.csv").empty


def test_a_set_is_measured_whole_and_remeasure_keeps_nothing(tmp_path):
    raw = RawTables("chapter", tmp_path, "cpu")
    raw.save("a.csv", table())
    assert raw.lack(["a.csv", "b.csv"]) and not raw.lack(["a.csv"])
    assert len(raw.kept("a.csv")) == 3
    again = RawTables("chapter", tmp_path, "cpu", remeasure=True)
    assert again.lack(["a.csv"]) and again.kept("a.csv").empty
    assert len(again.read("a.csv")) == 3   # what is saved still reads: a remeasure replaces it by saving


def test_a_sweep_saver_saves_curves_and_finals_under_its_prefix(tmp_path):
    raw = RawTables("chapter", tmp_path, "cpu")
    raw.sweep_saver("fashion-")(table(2), table(1))
    assert len(raw.read("fashion-curves.csv.gz")) == 2 and len(raw.read("fashion-finals.csv")) == 1


def test_a_table_says_where_its_rows_were_measured_even_across_sittings(tmp_path):
    raw = RawTables("chapter", tmp_path, "cpu")
    assert raw.measured_on("t.csv") == ""
    raw.save("t.csv", table().assign(device=["CPU (x86_64, 1 threads)", "GPU X", "CPU (x86_64, 1 thread)"]))
    raw.save("u.csv", table())
    here = raw.read("u.csv", stamps=True)["device"].iloc[0]
    assert raw.measured_on("t.csv") == "CPU (x86_64, 1 thread) and GPU X"
    assert raw.measured_on("u.csv") == here
    assert raw.measured_on("t.csv", "u.csv") == devices_said(["CPU (x86_64, 1 thread)", "GPU X", here])


def test_the_same_rows_saved_again_give_the_same_bytes(tmp_path, monkeypatch):
    import time
    raw = RawTables("chapter", tmp_path, "cpu")
    monkeypatch.setattr(time, "time", lambda: 1e9)
    raw.save("t.csv.gz", table())
    first = (tmp_path / "raw" / "chapter" / "t.csv.gz").read_bytes()
    monkeypatch.setattr(time, "time", lambda: 2e9)   # a later sitting: gzip would stamp another time
    raw.save("t.csv.gz", table())
    assert (tmp_path / "raw" / "chapter" / "t.csv.gz").read_bytes() == first
    raw.save("t.csv.gz", table(4))   # the control: other rows, other bytes
    assert (tmp_path / "raw" / "chapter" / "t.csv.gz").read_bytes() != first


def test_a_chapters_results_file_does_not_change_with_how_long_its_sitting_took(tmp_path):
    """Its readers would show as stale after every re-run; the run record keeps the minutes."""
    import fglib.book
    fglib.book.save_results("x", {"device": "CPU (x86_64, 1 thread)", "runs": 2, "minutes": 1.5}, folder=tmp_path)
    first = (tmp_path / "x.json").read_bytes()
    fglib.book.save_results("x", {"device": "CPU (x86_64, 1 thread)", "runs": 2, "minutes": 9.0}, folder=tmp_path)
    assert (tmp_path / "x.json").read_bytes() == first and b"minutes" not in first
    fglib.book.save_results("x", {"device": "CPU (x86_64, 1 thread)", "runs": 3, "minutes": 9.0}, folder=tmp_path)
    assert (tmp_path / "x.json").read_bytes() != first   # the control: a setting that changed does show


def test_a_set_measured_with_other_settings_is_measured_again(tmp_path):
    raw = RawTables("chapter", tmp_path, "cpu")
    settings = {"seed": 0, "rate": 0.01, "dims": (2, 10), "device": "auto"}
    raw.save("a.csv", table())
    assert raw.lack(["a.csv"], settings)   # saved, but with no record of its settings
    raw.save_settings(settings)
    assert not raw.lack(["a.csv"], settings) and not raw.lack(["a.csv"])
    assert raw.saved_settings() == {"seed": 0, "rate": 0.01, "dims": [2, 10], "device": "auto"}
    for changed in ({"dims": (2, 10, 100)}, {"seed": 1}, {"device": "cpu"}):
        assert raw.lack(["a.csv"], {**settings, **changed}), changed
    assert raw.lack(["a.csv"], {**settings, "new setting": 1})
    numbers = RawTables("numbers", tmp_path, "cpu")   # a column of numbers alone reads back as floats
    numbers.save("a.csv", table())
    numbers.save_settings({"seed": 0, "rate": 0.01})
    assert not numbers.lack(["a.csv"], {"seed": 0, "rate": 0.01}) and numbers.lack(["a.csv"], {"seed": 0, "rate": 0.02})
