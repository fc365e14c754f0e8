"""Execute the book's chapters with papermill, and keep their Colab set-up cell in sync.

    python tools/book.py execute --mode missing   # run chapters committed without outputs (full settings)
    python tools/book.py execute --mode full      # re-run every chapter with its full settings, in place
    python tools/book.py execute --mode full -p runs=3 cnn   # one chapter, one setting changed
    python tools/book.py execute --mode smoke --out DIR   # smoke settings, results in DIR (tests)
    python tools/book.py sync-setup               # rewrite the Colab cell, placed after the title
    python tools/book.py strip-paths              # make machine paths in outputs relative
    python tools/book.py status                   # regenerate book/status.md from the run records
    python tools/book.py runs cnn [--background] [--status] [--max-runs 2] [--methods fg]
                                                  # a long experiment's missing runs, each saved as it finishes
    python tools/book.py timings cnn --processes 3  # its step times, raw, from 3 separate processes (idle CPU)

Chapters are the .ipynb files listed in _toc.yml, so a new chapter needs no change here.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import tempfile
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


DISTRIBUTION = "fglib-forward-gradients"   # the package index's name ("fglib" there is another project)


def repository():
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]


def repository_url():
    return repository()["url"]


def book_url():
    """Where the repository's book/ folder is served raw (saved results are fetched from there
    when a chapter runs without the repository, e.g. on Colab): from _config.yml's repository."""
    repo = repository()
    owner_name = repo["url"].removeprefix("https://github.com/").strip("/")
    path = "/".join(part for part in (repo.get("path_to_book") or "", "book") if part)
    return f"https://raw.githubusercontent.com/{owner_name}/{repo.get('branch', 'main')}/{path}"


def setup_source():
    """The first cell of every chapter: on Colab only, install fglib without touching torch; and
    anywhere, where to fetch saved results from when the repository's folder is not here."""
    return (
        "# On Colab only: install fglib from the book's repository. --no-deps keeps Colab's own\n"
        "# torch, torchvision, pandas and seaborn. Saved results that are not here are fetched\n"
        "# from the repository.\n"
        "import os, sys\n"
        f"os.environ.setdefault(\"FGLIB_BOOK_URL\", \"{book_url()}\")\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    %pip install -q --no-deps \"{DISTRIBUTION} @ git+{repository_url()}\"\n"
    )


def has_outputs(path):
    nb = json.loads(path.read_text())
    return any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


def check_parameter_names(path, params):
    """Every parameter given is one the chapter's parameters cell defines: papermill would only
    warn about an unknown name (a typo such as seeds=3 for seed=3) and run the defaults."""
    import papermill as pm
    known = pm.inspect_notebook(str(path))
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise SystemExit(f"{path.stem} has no parameter {', '.join(map(repr, unknown))}; "
                         f"its parameters are {', '.join(known)}")


def execute(paths, mode, out_dir=None, overrides=None):
    import os
    import papermill as pm
    os.environ["FGLIB_PROGRESS"] = "text"  # the kernel inherits it: plain text bars, no widget
    params = {"smoke": True} if mode == "smoke" else {}
    params.update(overrides or {})
    for path in paths:   # every chapter named, also those --mode missing then skips: a typo is a typo
        check_parameter_names(path, params)
    if mode == "missing":
        paths = [p for p in paths if not has_outputs(p)]
    for path in paths:
        target = pathlib.Path(out_dir) / path.name if out_dir else path
        target.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        print(f"executing {path.relative_to(ROOT)} ({mode}, {params or 'defaults'}) ...", flush=True)
        inputs_log = pathlib.Path(tempfile.mkdtemp()) / "inputs.jsonl"
        os.environ["FGLIB_INPUTS_LOG"] = str(inputs_log)   # the kernel inherits it (fglib.book.report.note_read)
        pm.execute_notebook(without_injected_parameters(path), str(target), parameters=params,
                            cwd=str(path.parent), kernel_name="python3", progress_bar=False)
        record_input_path(target, path)
        remove_injected_cell_from_page(target)
        drop_hidden_progress(target)
        strip_machine_paths(target)
        seconds = time.perf_counter() - start
        if out_dir is None:  # a chapter executed in place: record the run, refresh the status page
            write_run_record(path, mode, params, seconds, read_inputs(inputs_log, path.stem))
            write_status()
        print(f"  done in {seconds:.0f} s -> {target}", flush=True)


RUNS = ROOT / "book" / "results" / "runs"


def device_description():
    """The name of the device a chapter's 'auto' picks here (fglib.device_name's wording)."""
    import torch
    from fglib.device import device_name
    return device_name("cuda" if torch.cuda.is_available() else "cpu")


def read_inputs(log, chapter=None):
    """{path relative to book/: sha256} of the results files a chapter read while it ran, but its
    own results file (results/<chapter>.json), which it writes itself."""
    if not log.exists():
        return {}
    book_dir = (ROOT / "book").absolute()
    out = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        path = pathlib.Path(entry["path"])
        if book_dir in path.parents and path.relative_to(book_dir).as_posix() != f"results/{chapter}.json":
            out[path.relative_to(book_dir).as_posix()] = entry["sha256"]
    return dict(sorted(out.items()))


def stale_inputs(record):
    """The inputs of a chapter's run record (files, or glob patterns of a folder's files) whose
    content has changed, or that are gone or newly there, since it ran."""
    from fglib.book.report import content_hash
    changed = []
    for rel, sha in record.get("inputs", {}).items():
        path = ROOT / "book" / rel
        if ("*" not in rel and not path.is_file()) or content_hash(path) != sha:
            changed.append(rel)
    return changed


def write_run_record(path, mode, params, seconds, inputs=None):
    """book/results/runs/<chapter>.json: when, where, with which torch, how long, which settings,
    and the results files it read (with their hashes: the status page marks it stale when one changes)."""
    import datetime
    import torch
    RUNS.mkdir(parents=True, exist_ok=True)
    record = {"chapter": path.stem, "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": device_description(), "torch": torch.__version__, "minutes": round(seconds / 60, 1),
              "settings": "full defaults" if not params else "reduced: " + ", ".join(f"{k} = {v}" for k, v in params.items()),
              "inputs": inputs or {}}
    (RUNS / f"{path.stem}.json").write_text(json.dumps(record, indent=1) + "\n")


def write_status():
    """Write book/status.md from the run records and the library's reference page from its
    docstrings. (The introduction is written by hand; its numbers are glued from the verdict.)"""
    (ROOT / "book" / "status.md").write_text(status_text())
    for path, text in reference_pages().items():
        (ROOT / "book" / path).parent.mkdir(exist_ok=True)
        (ROOT / "book" / path).write_text(text)


def reference_modules():
    """fglib's method modules in the order the package's docstring lists them, each with the
    first line of its own docstring: [(module name, description)]."""
    import importlib
    import fglib
    listing = fglib.__doc__.split("The method, one idea per module:")[1].split("\n\n")[1]
    names = [name for line in listing.splitlines() for name in re.split(r"\s{2,}", line.strip())[0].split(", ")]
    def first_sentence(doc):
        paragraph = " ".join(doc.strip().split("\n\n")[0].split())
        return re.split(r"(?<=[.:])\s", paragraph)[0].rstrip(".:")
    return [(name, first_sentence(importlib.import_module(f"fglib.{name}").__doc__)) for name in names if name != "quiet"]


def reference_text():
    """book/reference.md: the library's overview, a table of its modules, each linking to its page
    of book/api/, which Sphinx's autodoc makes from the docstrings (reference_pages)."""
    rows = "\n".join(f"| {{doc}}`fglib.{name} <api/{name}>` | {description} |" for name, description in reference_modules())
    return f"""# The fglib library

Generated by Sphinx's autodoc from the docstrings: nothing here is typed by hand. Each module does
one idea; a name shown in a page of a module is importable from `fglib` itself where the package
exports it (`fglib.make_method`, `fglib.train`). Every public function checks its arguments and
names the one that is wrong. {{doc}}`your_model` shows them at work.

| module | what it does |
| --- | --- |
{rows}
"""


def reference_pages():
    """{path under book/: text}: reference.md and one page per module in book/api/, each an
    automodule directive, so that the signatures and docstrings come from the code when the book
    is built."""
    pages = {"reference.md": reference_text()}
    for name, description in reference_modules():
        pages[f"api/{name}.md"] = f"# `fglib.{name}`\n\n```{{eval-rst}}\n.. automodule:: fglib.{name}\n```\n"
    return pages


def status_text():
    """The status page, generated from the run records: one row per chapter of _toc.yml."""
    lines = ["# Status of the chapters", "",
             "This page says when and how each chapter last ran, and whether the numbers it quotes are",
             "still current. It is generated from the record each run leaves, not typed by hand",
             "(`python tools/book.py status` writes it from `book/results/runs/`).", "",
             "*Settings* says whether a chapter ran",
             "with its default settings or with some changed, and which, beside their defaults.",
             "Every planned long run is already saved (the second table, trained by `tools/book.py runs`).",
             "The MNIST chapters read those runs and train nothing, whatever their `train_runs` setting, so",
             "their numbers are those of the full runs. The other chapters' shorter runs, the learning-rate",
             "sweep's among them, are saved in each chapter's own folder, `book/results/raw/<chapter>/`, and",
             "read from there. *Notebook minutes* is how long the notebook took to run from those saved runs:",
             "reading, grading and drawing, not training. The long runs' training times are in the second",
             "table. The shorter runs' training times are not on this page. *Inputs* counts the results files a chapter read (other chapters' results,",
             "saved runs). *Unchanged* means that each file's content is still the one the chapter read (its",
             "hash matches). A **stale** chapter read a file that has changed since: it quotes numbers that are",
             "no longer current and must be run again. A chapter reads other chapters' saved results, not their",
             "notebooks, so the order in which chapters last ran does not matter: *unchanged* confirms that the",
             "values a chapter quotes are the current ones.", "",
             ":::{div} full-width",  # the page has no contents column: the table may use its margin
             "| chapter | last run (UTC) | device | torch | notebook minutes | settings | inputs |",
             "| --- | --- | --- | --- | ---: | --- | --- |"]
    for path in chapters():
        record_path = RUNS / f"{path.stem}.json"
        if record_path.exists():
            r = json.loads(record_path.read_text())
            when = r["finished"].replace("T", " ")[:16]
            changed = stale_inputs(r)
            inputs = (f"**stale**: {', '.join(changed)} changed since" if changed else
                      f"{len(r['inputs'])} read, unchanged" if r.get("inputs") else
                      "none recorded" if "inputs" not in r else "none")
            lines.append(f"| {{doc}}`{path.stem}` | {when} | {r['device']} | {r['torch']} | {r['minutes']} | "
                         f"{settings_said(path, r['settings'])} | {inputs} |")
        else:
            meta = json.loads(path.read_text())["metadata"].get("papermill", {})
            when = (meta.get("end_time") or "–").replace("T", " ")[:16]
            minutes = f"{meta['duration'] / 60:.1f}" if meta.get("duration") else "–"
            params = meta.get("parameters") or {}
            settings = "full defaults" if not params else "reduced: " + ", ".join(f"{k} = {v}" for k, v in params.items())
            lines.append(f"| {{doc}}`{path.stem}` | {when} | – | – | {minutes} | {settings} | none recorded |")
    lines.append(":::")
    if any("| – | – |" in line for line in lines):
        lines += ["", "–: not recorded (the chapter last ran before run records were introduced; its time and "
                  "settings come from papermill's metadata in the notebook)."]
    lines += long_runs_status()
    return "\n".join(lines) + "\n"


def settings_said(path, settings):
    """A run record's settings for the status page: 'full defaults', or each changed setting beside
    its default (read from the chapter's parameters cell), e.g. 'changed: runs = 5 (default 10)'."""
    if not settings.startswith("reduced: "):
        return settings
    import papermill as pm
    defaults = {name: p["default"] for name, p in pm.inspect_notebook(str(path)).items()}
    said = []
    for item in settings[len("reduced: "):].split(", "):
        name, _, value = item.partition(" = ")
        default = defaults.get(name)
        if default == value:   # given, but the default anyway
            continue
        said.append(f"{item} (default {default})" if default not in (None, "None") else item)
    return "changed: " + ", ".join(said) if said else "full defaults"


def plan_readers(name):
    """The chapters that train and read a plan's runs: those whose code names it as PLANS["name"]."""
    needle = f'PLANS[\\"{name}\\"]'   # as the notebook's JSON writes it
    return [path.stem for path in chapters() if needle in path.read_text()]


def long_runs_status():
    """Lines of the status page on the long experiments saved run by run (fglib.book.runs.PLANS):
    the chapter that reads them, how many runs are saved, on what, and how many minutes they took. A
    chapter that reads them runs in seconds; its runs are trained by `python tools/book.py runs <plan>`.
    The column of runs in progress appears only while there is one."""
    from fglib.book.grading import devices_said
    from fglib.book.runs import LABELS, PARKED, PLANS, load_records, parked_runs
    single = "; ".join(f"{name} trained {LABELS[plan.methods[0]]} alone" for name, plan in PLANS.items()
                       if len(plan.methods) == 1) or "every plan trained two"
    rows = []
    for name, plan in PLANS.items():
        records = load_records(ROOT / "book" / "results", plan.experiment)
        done = records[records["iterations_done"] >= plan.iterations] if len(records) else records
        going = parked_runs(plan, ROOT / "book" / "results", ROOT / "book" / PARKED)
        rows.append([name, ", ".join(f"{{doc}}`{c}`" for c in plan_readers(name)) or "–",
                     f"{len(done)} of {plan.runs * len(plan.methods)}", f"{plan.iterations:,}",
                     devices_said(done["device"]) if len(done) else "–",
                     f"{done['minutes'].mean():.0f}" if len(done) else "–",
                     ", ".join(f"{stem} at {i:,}" for stem, i in going.items()) or "–"])
    header = ["plan", "chapter", "runs saved", "iterations per run", "device", "minutes per run",
              "in progress (checkpoint kept in git)"]
    if all(row[-1] == "–" for row in rows):
        header, rows = header[:-1], [row[:-1] for row in rows]
    align = {"runs saved": "---:", "iterations per run": "---:", "minutes per run": "---:"}
    lines = ["", "## Long experiments, saved run by run", "",
             "Their chapters read the saved runs; `python tools/book.py runs <plan>` trains the missing ones and "
             "resumes any run in progress from its checkpoint kept in git. A run's minutes are its wall-clock "
             "time, summed over its sittings where it was stopped and resumed. *Minutes per run* is their mean "
             f"over a plan's runs, both methods together where a plan has two ({single}). It includes the evaluations, whose number "
             "differs between plans, and whatever else the machine ran meanwhile. So it is not a step time: the "
             "chapters measure those apart.", "",
             "| " + " | ".join(header) + " |", "| " + " | ".join(align.get(h, "---") for h in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


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


def remove_injected_cell_from_page(target):
    """The cell papermill injects stays in the notebook (it records the run's parameters) but is
    left out of the rendered page: the chapter's settings table already shows every value."""
    nb = json.loads(target.read_text())
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def drop_hidden_progress(target):
    """A cell whose output the page never shows (tag remove-output) keeps no stderr stream:
    there it only holds the text progress bars of training, hundreds of lines per chapter."""
    nb = json.loads(target.read_text())
    for cell in nb["cells"]:
        if "remove-output" in cell.get("metadata", {}).get("tags", []):
            cell["outputs"] = [o for o in cell.get("outputs", []) if o.get("name") != "stderr"]
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def strip_machine_paths(path):
    """Make the paths papermill and warnings wrote into a notebook relative to the repository."""
    text = path.read_text()
    path.write_text(text.replace(str(ROOT) + "/", ""))


def sync_setup(paths):
    """Rewrite every chapter's Colab set-up cell from _config.yml and place it right after the
    chapter's title (the first Markdown cell), folded away in the rendered book."""
    for path in paths:
        nb = json.loads(path.read_text())
        setup = [c for c in nb["cells"] if SETUP_TAG in c.get("metadata", {}).get("tags", [])]
        if len(setup) != 1:
            raise SystemExit(f"{path}: exactly one cell must be tagged {SETUP_TAG!r}")
        cell = setup[0]
        cell["source"] = setup_source().splitlines(keepends=True)
        cell["metadata"]["tags"] = [SETUP_TAG, "hide-input"]
        rest = [c for c in nb["cells"] if c is not cell]
        title = next(i for i, c in enumerate(rest) if c["cell_type"] == "markdown")
        nb["cells"] = rest[:title + 1] + [cell] + rest[title + 1:]
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def _duration(minutes):
    """'42 minutes', or '3.8 hours' from two hours on."""
    return f"{minutes:.0f} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"


def long_runs(name, background=False, status=False, max_runs=None, methods=None, park=False):
    """A plan's missing runs (fglib.book.runs.PLANS), in book/ as its chapter would run them: in
    the foreground with a progress bar, or in the background (log in book/.checkpoints/<name>.log);
    or only how many remain and the time they should take; or, with `park`, copy the unfinished
    runs' checkpoints to book/parked/ to commit, so that the next sitting resumes them."""
    from fglib.book.runs import PARKED, PLANS, progress_report, run_missing
    if name not in PLANS:
        raise SystemExit(f"no plan {name!r}: plans are {', '.join(PLANS)}")
    if methods:   # only the plan's own methods: an unknown one would count runs that can never exist
        unknown = [m for m in methods.split(",") if m not in PLANS[name].methods]
        if unknown:
            raise SystemExit(f"--methods {methods}: plan {name!r} has no method {', '.join(map(repr, unknown))}; "
                             f"its methods are {', '.join(PLANS[name].methods)}")
    os.chdir(ROOT / "book")
    plan = PLANS[name] if not methods else PLANS[name].smaller(methods=tuple(methods.split(",")))
    if park:
        return park_runs(name, plan)
    report = progress_report(plan, "results", parked=PARKED)
    minutes = report["minutes left"]
    going = _iterations_done(report["in progress"], plan)
    print(f"{name}: {report['left']} of {report['runs']} runs left"
          + (f"; in progress: {going}" if going else "")
          + (f"; about {_duration(minutes)} of computing at {_duration(report['minutes per run'])} per run"
             if minutes else ""))
    if report["not parked"]:
        print(f"{name}: not parked yet: {', '.join(report['not parked'])} (on a machine that will not be there "
              f"next time, run `tools/book.py runs {name} --park` and commit book/{PARKED}/ before the sitting ends)")
    if status or not report["left"]:
        return None
    import fglib
    try:   # find the data now, in the foreground: a background run would only say so in its log
        data = fglib.load_data("mnist")
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"{name}: no run started: {err}") from None
    if background:
        # one log per set of methods, so that two runs of a plan can share the cores
        log = pathlib.Path(".checkpoints") / f"{name}{'-' + methods.replace(',', '-') if methods else ''}.log"
        log.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, str(ROOT / "tools" / "book.py"), "runs", name]
        cmd += ["--max-runs", str(max_runs)] if max_runs is not None else []   # 0 means none, not no limit
        cmd += ["--methods", methods] if methods else []
        job = subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "FGLIB_PROGRESS": "text"})
        print(f"started in the background (pid {job.pid}); progress in book/{log}")
        return None
    run_missing(plan, data, "results", max_runs=max_runs, parked=PARKED)
    return None


def _iterations_done(runs, plan):
    """'fg-seed3 at 34,578 of 70,000 iterations, ...' from {run stem: iterations}."""
    return ", ".join(f"{stem} at {done:,} of {plan.iterations:,} iterations" for stem, done in runs.items())


def park_runs(name, plan):
    """Copy the plan's unfinished checkpoints into book/parked/ and say what to commit."""
    from fglib.book.runs import PARKED, park
    held = park(plan, "results", parked=PARKED)
    if not held:
        print(f"{name}: no unfinished run to park")
        return None
    print(f"{name}: parked {_iterations_done(held, plan)}; "
          f"commit book/{PARKED}/{plan.experiment}/ so that the next sitting resumes them")
    return None


def long_run_timings(name, processes=3, repeats=30):
    """A plan's step timings, raw, from `processes` separate processes run one after another
    (each appends its rounds to book/results/raw/<plan>/timings.csv.gz; the first also saves the
    step's memory)."""
    from fglib.book.runs import PLANS, time_in_processes
    if name not in PLANS:
        raise SystemExit(f"no plan {name!r}: plans are {', '.join(PLANS)}")
    if processes < 1 or repeats < 1:   # nothing would be timed, and the command would say nothing of it
        raise SystemExit(f"--processes {processes} --repeats {repeats}: each must be at least 1")
    os.chdir(ROOT / "book")
    time_in_processes(PLANS[name], "results", processes, repeats)
    return None


def network_memory():
    """Claim 6's raw measurements: every network's step memory at batch 64, each method, into
    book/results/raw/networks/memory.csv (deterministic: seconds, no training)."""
    import fglib
    from fglib.book.runs import measure_network_memory, save_table
    table = measure_network_memory(fglib.load_data("mnist"))
    save_table(ROOT / "book" / "results", "networks", "memory.csv", table)   # stamped as the scaling chapter stamps it, atomically
    print(table[["network", "method", "total"]].to_string(index=False))


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
    sub.add_parser("status")
    sub.add_parser("memory", help="every network's step memory at batch 64 (claim 6), raw")
    runs = sub.add_parser("runs", help="run a long experiment's missing runs (each saved as it finishes)")
    runs.add_argument("plan", help="a plan of fglib.book.runs.PLANS, e.g. cnn")
    runs.add_argument("--background", action="store_true",
                      help="detach; follow book/.checkpoints/<plan>.log (<plan>-<methods>.log with --methods)")
    runs.add_argument("--status", action="store_true", help="only say how many runs remain and how long")
    runs.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (e.g. 2: one pair)")
    runs.add_argument("--methods", default=None, help="only these of the plan's methods, e.g. fg or bp,fg")
    runs.add_argument("--park", action="store_true",
                      help="copy unfinished runs' checkpoints to book/parked/ (commit them before a sitting ends)")
    timings = sub.add_parser("timings", help="a long experiment's step times, raw, from separate processes")
    timings.add_argument("plan")
    timings.add_argument("--processes", type=int, default=3)
    timings.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    if args.command == "timings":
        return long_run_timings(args.plan, args.processes, args.repeats)
    if args.command == "memory":
        return network_memory()
    if args.command == "runs":
        return long_runs(args.plan, args.background, args.status, args.max_runs, args.methods, args.park)
    paths = chapters()
    if args.command == "sync-setup":
        return sync_setup(paths)
    if args.command == "status":
        return write_status()
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
