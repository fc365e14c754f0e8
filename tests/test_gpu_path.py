"""The GPU path (tools/gpu.py), proved on the CPU before it ever meets a GPU: the plan covers
every chapter once, a chunk runs with smoke settings in a copy of the checkout and packs one
tarball, and collecting it files the notebooks and results into a checkout; GPU results land
beside the CPU ones, never over them."""
import json
import shutil
import subprocess
import sys
import tarfile

import pytest

import fglib
from conftest import ROOT, data_folder

sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402
import gpu  # noqa: E402


def test_the_plan_covers_every_chapter_once():
    planned = [c for _, _, work in gpu.CHUNKS.values() for c, _ in work]
    assert sorted(planned) == sorted(p.stem for p in book.chapters())
    assert all(minutes <= 8 for _, minutes, _ in gpu.CHUNKS.values())


def test_a_chunk_runs_in_a_copy_and_is_collected(tmp_path):
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "_build", "data", "*.pyc"))
    out = tmp_path / "out"
    env = {**__import__("os").environ, "FGLIB_DATA": data_folder()}
    run = subprocess.run([sys.executable, str(copy / "tools" / "gpu.py"), "run", "depth", "--out", str(out),
                          "--smoke"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    tarball = out / "depth.tar.gz"
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "book/scaling.ipynb" in names and "book/results/runs/scaling.json" in names
    target = tmp_path / "elsewhere"
    (target / "book").mkdir(parents=True)
    assert sorted(gpu.collect(tarball, root=target)) == sorted(names)
    record = json.loads((target / "book" / "results" / "runs" / "scaling.json").read_text())
    assert record["settings"] == "reduced: smoke = True"
    nb = json.loads((target / "book" / "scaling.ipynb").read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_collect_refuses_paths_outside_the_book(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    (tmp_path / "x.txt").write_text("x")
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(tmp_path / "x.txt", arcname="fglib/evil.py")
    try:
        gpu.collect(bad, root=tmp_path / "root")
    except SystemExit as err:
        assert "outside book/" in str(err)
    else:
        raise AssertionError("collect accepted a path outside book/")


def test_gpu_results_sit_beside_cpu_results(tmp_path):
    fglib.book.save_results("mlp", {"lr 2e-05": {"device": "NVIDIA H100 80GB HBM3", "ratio": 0.5}}, folder=tmp_path)
    fglib.book.save_results("mlp", {"lr 2e-05": {"device": "CPU (x86_64, 2 threads)", "ratio": 2.0}}, folder=tmp_path)
    assert fglib.book.load_results(tmp_path)["mlp"]["lr 2e-05"]["ratio"] == 2.0
    assert fglib.book.load_results(tmp_path / "gpu")["mlp"]["lr 2e-05"]["ratio"] == 0.5


def test_cuda_graph_variants_are_timed_only_on_a_gpu_against_backprop_with_cuda_graphs():
    from fglib.book import implementations as impl
    cpu, gpu = impl.variants_for("cpu"), impl.variants_for("cuda")
    assert not any(impl.GPU_ONLY in v for v in cpu) and sum(impl.GPU_ONLY in v for v in gpu) == 3
    assert impl.reference_of("FG, fglib engine, CUDA graphs") == "backprop, CUDA graphs"
    assert impl.variants_for("cpu", compiled=False) == [v for v in impl.VARIANTS if "compiled" not in v
                                                         and impl.GPU_ONLY not in v and "in place" not in v
                                                         and v != impl.PLAIN]
    import torch.nn.functional as F
    method = fglib.make_method("fg", fglib.build_model("logreg"), F.cross_entropy, 1e-3, compile="reduce-overhead")
    assert method.compile == "reduce-overhead"


def test_a_forward_gradient_step_is_set_against_the_fastest_backprop_at_its_level_or_below():
    """Fastest against fastest: a compiled backprop slower than eager is never the reference."""
    import pandas as pd
    from fglib.book import implementations as impl
    times = {"base": 1.0, "backprop": 2.0, "backprop, compiled": 3.0, "FG, fglib engine": 4.0,
             "FG, fglib engine, compiled": 2.4}
    rounds = pd.DataFrame([{"round": r, "name": k, "seconds": v * (1 + 0.001 * r), "disturbed": False} for r in range(20)
                           for k, v in times.items()])
    s = impl.summarise(rounds, [k for k in times if k != "base"]).set_index("variant")
    assert s.loc["FG, fglib engine, compiled", "against"] == "backprop"
    assert s.loc["FG, fglib engine, compiled", "R/R_b"] == pytest.approx(1.2, rel=1e-6)
    faster = rounds.assign(seconds=rounds["seconds"].where(rounds["name"] != "backprop, compiled", 1.5))  # the control
    s = impl.summarise(faster, [k for k in times if k != "base"]).set_index("variant")
    assert s.loc["FG, fglib engine, compiled", "against"] == "backprop, compiled"
    assert s.loc["FG, fglib engine", "against"] == "backprop"   # eager is never set against a compiled step
    assert impl.references_of("FG, fglib engine, CUDA graphs") == ["backprop", impl.PLAIN, "backprop, compiled",
                                                                   "backprop, CUDA graphs"]
