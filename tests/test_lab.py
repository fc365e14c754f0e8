"""JupyterLab, the interactive way into the book: a real server on a free loopback port with a
token and no browser, asked through its REST API for the contents of book/; a kernel started
through it imports fglib and finds the data folder; then everything is shut down, within a
bounded time, with no process left behind."""
import asyncio
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
START_TIMEOUT, CALL_TIMEOUT = 90, 60
# A fresh kernel on a loaded 2-core CI machine can take minutes to import torch the first time:
# the run is bounded as a whole, not per message, so a slow start is not mistaken for a hang.
EXECUTE_TIMEOUT = 300


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, token, path, method="GET"):
    request = urllib.request.Request(f"{base}{path}", method=method, data=b"{}" if method == "POST" else None,
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=CALL_TIMEOUT) as response:
        body = response.read()
        return json.loads(body) if body else None


def processes_mentioning(text):
    """PIDs whose command line contains `text` (the test's own runtime folder)."""
    found = []
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def lab(tmp_path):
    """(base url, token, log path) of a JupyterLab server rooted at the repository; shut down afterwards."""
    port, token = free_port(), uuid.uuid4().hex
    runtime = tmp_path / "runtime"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "FGLIB_PROGRESS": "text"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={ROOT}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    log = open(tmp_path / "lab.log", "wb")
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                call(base, token, "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield base, token, tmp_path / "lab.log"
    finally:
        try:
            call(base, token, "/api/shutdown", "POST")  # shuts its kernels down too
            server.wait(timeout=30)
        except Exception:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        log.close()
        deadline = time.monotonic() + 15
        while processes_mentioning(str(runtime)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = processes_mentioning(str(runtime))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind: {left}"


def request(ws, msg_type, content):
    """Send a shell request on the kernel's websocket; return its msg_id."""
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": msg_type, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [], "content": content}))
    return msg_id


async def until_ready(ws, deadline, every=10):
    """Ask for kernel_info until the kernel answers, as Jupyter's own clients do: a request sent
    while a busy machine is still connecting the kernel's channels can be lost, and waiting on it
    would read as a hung kernel."""
    while time.monotonic() < deadline:
        asked = request(ws, "kernel_info_request", {})
        answer_by = min(deadline, time.monotonic() + every)
        while (left := answer_by - time.monotonic()) > 0:
            try:
                message = json.loads(await asyncio.wait_for(ws.read_message(), left))
            except asyncio.TimeoutError:
                break
            if message.get("parent_header", {}).get("msg_id") == asked and message["msg_type"] == "kernel_info_reply":
                return
    raise TimeoutError(f"the kernel did not answer kernel_info within {EXECUTE_TIMEOUT} s")


async def execute(base, token, kernel_id, code):
    """Run `code` in the kernel over its websocket channel, once the kernel answers; return
    (status, stdout) when both the shell's execute_reply and iopub's idle status have come.
    The two channels keep no order between them: waiting for idle after the reply had hung
    whenever idle came first."""
    from tornado.websocket import websocket_connect
    ws = await websocket_connect(f"{base.replace('http', 'ws')}/api/kernels/{kernel_id}/channels?token={token}")
    deadline = time.monotonic() + EXECUTE_TIMEOUT
    await until_ready(ws, deadline)
    msg_id = request(ws, "execute_request", {"code": code, "silent": False, "store_history": False,
                                             "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    status, idle, out = None, False, []
    while not (status and idle):  # shell's reply and iopub's idle come on two channels, in either order
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the kernel did not finish within {EXECUTE_TIMEOUT} s; output so far: {out}")
        message = json.loads(await asyncio.wait_for(ws.read_message(), left))
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            out.append("\n".join(content["traceback"]))
        elif kind == "execute_reply":
            status = content["status"]
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
    ws.close()
    return status, "".join(out)


def test_jupyterlab_lists_the_book_and_its_kernel_imports_fglib(lab):
    base, token, log = lab
    listing = call(base, token, "/api/contents/book")
    names = {item["name"] for item in listing["content"]}
    assert {"intro.md", "logreg.ipynb", "mlp.ipynb"} <= names
    with pytest.raises(urllib.error.HTTPError):  # the token is required
        urllib.request.urlopen(f"{base}/api/contents/book", timeout=CALL_TIMEOUT)
    kernel = call(base, token, "/api/kernels", "POST")
    code = ("import os, fglib\nfrom fglib.data import data_root\nfrom fglib.train import progress_bar\n"
            "print(fglib.__file__)\nprint(os.path.isdir(os.path.join(data_root(), 'MNIST')))\n"
            "os.environ.pop('FGLIB_PROGRESS', None)\nimport tqdm.notebook\n"
            "print(isinstance(progress_bar(range(2)), tqdm.notebook.tqdm))")
    try:
        status, out = asyncio.run(execute(base, token, kernel["id"], code))
    except TimeoutError as timeout:
        pytest.fail(f"{timeout}\nserver log:\n{log.read_text()[-3000:]}")
    assert status == "ok", out
    path, data_found, bar = out.split()
    assert pathlib.Path(path).resolve().is_relative_to(ROOT) and data_found == "True"
    assert bar == "True"  # ipywidgets is there: the bar is tqdm's notebook widget
