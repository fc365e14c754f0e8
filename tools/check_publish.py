"""The three ways readers reach the book, each tried for real in a fresh environment.

    python tools/check_publish.py            # all three (a few minutes; .ci/run runs it after make test)
    python tools/check_publish.py workflow   # or one of: workflow, package, colab

workflow  the publish workflow's own `run:` steps (install, build) in a fresh virtual
          environment, in a copy of the repository; _build/html/index.html must appear.
package   `pip install --no-deps` of the checkout in a clean virtual environment: the
          distribution is found under its name and holds the `fglib` package.
colab     a simulated Colab session: a fresh environment that already has torch and the
          rest of Colab's stack (this project's environment, on the path the way Colab's
          preinstalled packages are, but without fglib), the set-up cell's install from the
          checkout with --no-deps, then the verdict chapter (which reads saved results) run with
          papermill in smoke mode from a folder outside the repository; the results must be
          fetched over HTTP from a server of the repository's book/ folder.
"""
import functools
import http.server
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from book import DISTRIBUTION  # noqa: E402


def run(cmd, **kwargs):
    print("  $", cmd if isinstance(cmd, str) else " ".join(map(str, cmd)), flush=True)
    done = subprocess.run(cmd, text=True, capture_output=True, **kwargs)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def copy_of_repository(dest):
    """The files git would commit (tracked, and new ones not ignored), as a clean clone has them."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def fresh_venv(path):
    run([sys.executable, "-m", "venv", str(path)])
    return path / "bin"


def check_workflow(tmp):
    """Every `run:` step of the build job, in order, as the runner would (bash, repository root)."""
    repo = copy_of_repository(tmp / "repo")
    workflow = yaml.safe_load((repo / ".github/workflows/pages.yml").read_text())
    bin_dir = fresh_venv(tmp / "venv")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(bin_dir.parent)}
    for step in workflow["jobs"]["build"]["steps"]:
        if "run" in step:
            run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env)
    if not (repo / "_build/html/index.html").is_file():
        raise SystemExit("the workflow's steps ran but built no _build/html/index.html")
    print("workflow: its own steps built _build/html/index.html in a fresh environment")


def check_package(tmp):
    bin_dir = fresh_venv(tmp / "venv")
    run([bin_dir / "pip", "install", "-q", "--no-deps", str(copy_of_repository(tmp / "repo"))])
    run([bin_dir / "python", "-c", "import importlib.metadata as m; "
         f"files = m.distribution({DISTRIBUTION!r}).files; "
         "assert any(str(f).replace(chr(92), '/').endswith('fglib/__init__.py') for f in files), files"])
    print(f"package: installs as {DISTRIBUTION} in a clean environment and holds fglib")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder):
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check_colab(tmp, chapter="verdict"):
    repo = copy_of_repository(tmp / "repo")
    bin_dir = fresh_venv(tmp / "venv")
    # Colab's preinstalled stack: this environment's packages on the path (fglib is not among them:
    # it is installed here in editable mode, through a .pth file that a path line does not run)
    site = pathlib.Path(run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                            ).stdout.strip())
    (site / "colab_preinstalled.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([bin_dir / "python", "-c", "import fglib"], capture_output=True, cwd=tmp)
    if probe.returncode == 0:
        raise SystemExit("the simulated Colab environment already has fglib: the check would prove nothing")
    run([bin_dir / "pip", "install", "-q", "--no-deps", str(repo)])              # the set-up cell's install
    run([bin_dir / "python", "-m", "ipykernel", "install", "--sys-prefix", "--name", "colab-sim"])
    work = tmp / "content"                                                       # Colab's /content
    work.mkdir()
    shutil.copy(repo / "book" / f"{chapter}.ipynb", work)
    server = serve(repo / "book")
    try:
        env = {**os.environ, "FGLIB_BOOK_URL": f"http://127.0.0.1:{server.server_address[1]}",
               "FGLIB_PROGRESS": "text", "PYTHONPATH": ""}
        run([bin_dir / "python", "-m", "papermill", f"{chapter}.ipynb", "out.ipynb", "-k", "colab-sim",
             "-p", "smoke", "True", "--cwd", str(work)], cwd=work, env=env)
    finally:
        server.shutdown()
    if not ((work / "results" / "unbiasedness.json").is_file() and (work / "results" / "raw" / "scaling").is_dir()):
        raise SystemExit("the chapter ran but fetched no results (results/unbiasedness.json and results/raw/scaling/)")
    print(f"colab: {chapter}.ipynb ran outside the repository and fetched its saved results")


CHECKS = {"workflow": check_workflow, "package": check_package, "colab": check_colab}


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or list(CHECKS)
    for name in names:
        if name not in CHECKS:
            raise SystemExit(f"unknown check {name!r}: choose from {', '.join(CHECKS)}")
        print(f"{name} ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            CHECKS[name](pathlib.Path(tmp))


if __name__ == "__main__":
    main()
