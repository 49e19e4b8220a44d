"""Helpers for tests that start servers: a free loopback port, and stopping what a test started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM the process group the test started (servers fork workers), SIGKILL it if it lingers; nothing else."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone already
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=grace_s)


def wait_until_ready(proc: subprocess.Popen, url: str, timeout_s: float = 120.0, log: Path | None = None) -> None:
    """Poll `url` until it answers 200; fail when the process exits first or the time runs out (with the tail of
    its `log`, when given)."""
    tail = lambda: f":\n{log.read_text()[-3000:]}" if log is not None else ""  # noqa: E731
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with status {proc.returncode} before answering{tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no answer from {url} within {timeout_s:.0f} s{tail()}")


def serve_model(model_uri: str, tracking_uri: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve -m model_uri --env-manager local` on a free loopback port, ready; returns the server
    (stop it with stop_process_group) and its base URL. Its output goes to cwd/server.log.

    As in an activated venv: MLflow execs `uvicorn` from PATH, and gan_core must be importable by the server
    (installed with `pip install -e .`, or here on PYTHONPATH)."""
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "GANOPS_DEVICE": "cpu",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    port = free_port()
    log_path = cwd / "server.log"
    with log_path.open("wb") as log:  # the server holds its own copy of the file
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(server, f"{base}/ping", log=log_path)
    except BaseException:
        stop_process_group(server)
        raise
    return server, base
