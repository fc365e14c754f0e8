"""Execute the book's chapters with papermill, and keep their Colab set-up cell in sync.

    python tools/book.py execute --mode missing   # run chapters committed without outputs (full settings)
    python tools/book.py execute --mode full      # re-run every chapter with its full settings, in place
    python tools/book.py execute --mode full -p runs=3 cnn   # one chapter, one setting changed
    python tools/book.py execute --mode smoke --out DIR   # smoke settings, results in DIR (tests)
    python tools/book.py sync-setup               # rewrite the first cell of every chapter
    python tools/book.py strip-paths              # make machine paths in outputs relative

Chapters are the .ipynb files listed in _toc.yml, so a new chapter needs no change here.
"""
import argparse
import json
import pathlib
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
SETUP_TAG = "colab-setup"


def chapters():
    """The notebooks of _toc.yml, in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    paths = [ROOT / f"{f}.ipynb" for f in files]
    return [p for p in paths if p.exists()]


def repository_url():
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def setup_source():
    """The first cell of every chapter: on Colab only, install fglib without touching torch."""
    return (
        "# On Colab only: install fglib from the book's repository. --no-deps keeps Colab's own\n"
        "# torch, torchvision, pandas and seaborn; elsewhere this cell does nothing.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    %pip install -q --no-deps \"fglib @ git+{repository_url()}\"\n"
    )


def has_outputs(path):
    nb = json.loads(path.read_text())
    return any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


def execute(paths, mode, out_dir=None, overrides=None):
    import papermill as pm
    params = {"smoke": True} if mode == "smoke" else {}
    params.update(overrides or {})
    if mode == "missing":
        paths = [p for p in paths if not has_outputs(p)]
    for path in paths:
        target = pathlib.Path(out_dir) / path.name if out_dir else path
        target.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        print(f"executing {path.relative_to(ROOT)} ({mode}, {params or 'defaults'}) ...", flush=True)
        pm.execute_notebook(without_injected_parameters(path), str(target), parameters=params,
                            cwd=str(path.parent), kernel_name="python3", progress_bar=False)
        record_input_path(target, path)
        strip_machine_paths(target)
        print(f"  done in {time.perf_counter() - start:.0f} s -> {target}", flush=True)


def without_injected_parameters(path):
    """The notebook minus the parameters a previous run injected, so that they never carry over."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    nb.metadata.pop("papermill", None)
    return nb


def record_input_path(target, path):
    """Papermill records an in-memory input as the whole notebook; record the file instead."""
    nb = json.loads(target.read_text())
    nb["metadata"]["papermill"]["input_path"] = str(path.relative_to(ROOT))
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def strip_machine_paths(path):
    """Make the paths papermill and warnings wrote into a notebook relative to the repository."""
    text = path.read_text()
    path.write_text(text.replace(str(ROOT) + "/", ""))


def sync_setup(paths):
    for path in paths:
        nb = json.loads(path.read_text())
        first = nb["cells"][0]
        if SETUP_TAG not in first.get("metadata", {}).get("tags", []):
            raise SystemExit(f"{path}: the first cell must be tagged {SETUP_TAG!r}")
        first["source"] = setup_source().splitlines(keepends=True)
        first["metadata"]["tags"] = [SETUP_TAG, "hide-input"]  # folded away in the rendered book
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute")
    ex.add_argument("--mode", choices=["missing", "full", "smoke"], default="missing")
    ex.add_argument("--out", help="write executed notebooks here instead of in place")
    ex.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a parameter (YAML value), e.g. -p runs=3 -p device=cpu")
    ex.add_argument("only", nargs="*", help="chapter names (e.g. unbiasedness); default all")
    sub.add_parser("sync-setup")
    sub.add_parser("strip-paths")
    args = parser.parse_args(argv)
    paths = chapters()
    if args.command == "sync-setup":
        return sync_setup(paths)
    if args.command == "strip-paths":
        for path in paths:
            strip_machine_paths(path)
        return None
    if args.only:
        unknown = set(args.only) - {p.stem for p in paths}
        if unknown:
            raise SystemExit(f"unknown chapters {sorted(unknown)}; known: {[p.stem for p in paths]}")
        paths = [p for p in paths if p.stem in args.only]
    overrides = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--param wants NAME=VALUE, got {item!r}")
        overrides[name] = yaml.safe_load(value)
    execute(paths, args.mode, args.out, overrides)


if __name__ == "__main__":
    sys.exit(main())
