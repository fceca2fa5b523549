"""Start the studio as users do (`python app.py`) on a free localhost port, for the end-to-end tests."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 600  # the first start ever assembles the embedded model into the cache


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(work_dir: Path, *args: str, env: dict = None, log_name="server.log"):
    """Start `python app.py args` on a free port and wait until it answers: (the process, its URL).
    Its log is `work_dir/log_name`. Gradio's files go to `work_dir`, and the Hub is off (HF_HUB_OFFLINE), so a
    CI machine with network behaves like this one."""
    port = free_port()
    log_path = work_dir / log_name
    env = {**os.environ, "GRADIO_TEMP_DIR": str(work_dir / "gradio"), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the studio exited with {server.returncode}:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the studio did not answer within {STARTUP_TIMEOUT_S} s:\n{log_tail(log_path)}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return server, url
            time.sleep(0.5)
    except BaseException:
        stop_studio(server)
        raise


def stop_studio(server: subprocess.Popen):
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextlib.contextmanager
def running_studio(work_dir: Path, *args: str):
    """Yield the URL of a studio started with `args` (see `start_studio`)."""
    server, url = start_studio(work_dir, *args)
    try:
        yield url
    finally:
        stop_studio(server)


def log_tail(path: Path, lines=40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
