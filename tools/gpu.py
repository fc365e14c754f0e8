"""The book's GPU work, cut into chunks that fit a lent GPU machine.

The machine this is written for has no internet, Python 3.12 with torch 2.11 but no papermill,
runs each command for at most 10 minutes, and sends back at most 8 files. So the work is a
list of chunks of at most about 8 minutes each, ordered by what they settle; each chunk packs
everything it produced (executed notebooks, results/gpu/*.json and raw/, run records) into one tarball
in the output folder, so a chunk that is cut off loses only itself.

    python tools/gpu.py plan                           # the chunks, in order of value
    python tools/gpu.py run CHUNK --out DIR            # on the GPU machine: one chunk -> DIR/CHUNK.tar.gz
    python tools/gpu.py run CHUNK --out DIR --smoke    # the same with smoke settings (a dry run, any machine)
    python tools/gpu.py collect DIR/CHUNK.tar.gz       # here: file the chunk's notebooks and results into book/

README.md ("GPU runs") gives the commands that carry the data and the wheels there.
"""
import argparse
import pathlib
import sys
import tarfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

# name: (what it settles, minutes guessed for one H100 before any GPU run, [(chapter, parameters)])
CHUNKS = {
    # depth first: it measures claim 6's memory table, which the implementations chapter's lean-step
    # targets read (a chapter run before it would show them as not measured)
    "depth": ("claims 5 and 6 (depth 1 to 100, memory against depth and batch)", 6, [("scaling", {})]),
    "speed": ("claims 3 and 5 (step costs, every engine, eager and compiled)", 6,
              [("implementations", {}), ("measuring", {})]),
    "logreg": ("claim 4, logistic regression (the paper's settings, then run on until backprop levels off)", 6,
               [("logreg", {})]),
    "mlp": ("claims 3 and 4, the MLP's step costs, and the MLP at 2e-5 (5 x 30,000)", 8, [("mlp", {})]),
    "mlp_long": ("claim 4, MLP at 2e-4 run until backprop levels off (5 x 70,000)", 8, [("mlp_long", {})]),
    "cnn": ("claim 4, CNN (its missing runs, each resumed from its checkpoint)", 8, [("cnn", {"train_runs": None})]),
    "sweep": ("the learning-rate sweep (logistic regression, MLP and CNN)", 8, [("lr_sweep", {})]),
    "variance": ("beyond the paper: variance, and whether K directions pay for themselves (MLP)", 8,
                 [("variance", {})]),
    "beyond": ("beyond the paper: finite differences, several workers; the practitioners' chapter", 6,
               [("zeroth_order", {}), ("distributed", {}), ("your_model", {})]),
    "local": ("beyond the paper: activity perturbation and local losses (MLP, full sweep)", 6,
              [("local_losses", {})]),
    "optimisers": ("beyond the paper: momentum and Adam, each tuned, and Fashion-MNIST (MLP)", 8,
                   [("optimisers", {})]),
    "finetune": ("beyond the paper: fine-tuning a pre-trained MLP, four regimes, every method at its own rate", 6,
                 [("finetune", {})]),
    "rest": ("the other chapters, and the verdict", 8,
             [("forward_reverse", {}), ("unbiasedness", {}), ("test_functions", {}), ("verdict", {})]),
}


def plan():
    for i, (name, (settles, minutes, work)) in enumerate(CHUNKS.items(), 1):
        chapters = ", ".join(c + (f" ({p})" if p else "") for c, p in work)
        print(f"{i}. {name:10s} ~{minutes} min  {settles}: {chapters}")


def run(chunk, out, smoke=False):
    """Execute a chunk's chapters in place (in this checkout), then pack what they wrote."""
    import book
    if chunk not in CHUNKS:
        raise SystemExit(f"unknown chunk {chunk!r}; choose one of {list(CHUNKS)}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    paths = {p.stem: p for p in book.chapters()}
    done = []
    for chapter, params in CHUNKS[chunk][2]:
        mode = "smoke" if smoke else "full"
        try:
            book.execute([paths[chapter]], mode, None, params)
            done.append(chapter)
        except Exception as err:  # keep what the other chapters of the chunk produced
            print(f"{chapter} failed: {type(err).__name__}: {str(err)[:500]}", flush=True)
    pack(chunk, done, started, out)


def pack(chunk, chapters, started, out):
    """DIR/<chunk>.tar.gz: the executed notebooks, their run records, and every results file
    written since the chunk started (results/gpu/*.json and the raw measurements under raw/)."""
    results = ROOT / "book" / "results"
    files = [ROOT / "book" / f"{c}.ipynb" for c in chapters]
    files += [results / "runs" / f"{c}.json" for c in chapters]
    files += [p for p in results.rglob("*") if p.is_file() and p.stat().st_mtime >= started and p not in files]
    target = pathlib.Path(out) / f"{chunk}.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        for f in files:
            if f.exists():
                tar.add(f, arcname=str(f.relative_to(ROOT)))
    print(f"{target}: {len(files)} files, {target.stat().st_size / 2**20:.1f} MiB", flush=True)


def collect(tarball, root=ROOT):
    """File a chunk's tarball into the checkout at `root` (notebooks, results, run records) and
    regenerate the status page."""
    with tarfile.open(tarball) as tar:
        names = [m.name for m in tar.getmembers()]
        bad = [n for n in names if not n.startswith("book/") or ".." in n]
        if bad:
            raise SystemExit(f"{tarball}: refusing paths outside book/: {bad}")
        tar.extractall(root, filter="data")
    print("\n".join(names))
    from fglib.book.runs import PARKED, PLANS, drop_parked
    for plan in PLANS.values():   # a run the chunk finished no longer needs its parked checkpoint here
        for path in drop_parked(plan, root / "book" / "results", root / "book" / PARKED):
            print(f"deleted {path.relative_to(root)} (its run is saved now)")
    if root == ROOT:
        import book
        book.write_status()
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan")
    r = sub.add_parser("run")
    r.add_argument("chunk")
    r.add_argument("--out", required=True)
    r.add_argument("--smoke", action="store_true")
    c = sub.add_parser("collect")
    c.add_argument("tarball")
    args = parser.parse_args(argv)
    if args.command == "plan":
        return plan()
    if args.command == "run":
        return run(args.chunk, args.out, args.smoke)
    return collect(args.tarball)


if __name__ == "__main__":
    sys.exit(main())
