"""`ganops ui` against the way it used to start the MLflow UI: seconds until the UI answers, and what is left serving
after `kill <pid>` of the process the user started.

    .venv/bin/python benchmarks/ui_start.py --rounds 3
    .venv/bin/python benchmarks/ui_start.py --smoke          # one round: checks that the script runs

Reference: a parent process that runs `mlflow ui` as its child (the old `ganops ui`: subprocess.call) with MLflow's
defaults (4 web workers, its GenAI job runner). Ours: `ganops ui` (exec: its PID is the server; one web worker per
two cores; no job runner). Both on the same empty, migrated SQLite store, rounds alternating; medians reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_and_kill(argv: list[str], port: int, env: dict[str, str], timeout_s: float = 300) -> tuple[float, bool]:
    """Seconds until the UI answers; whether it still answers 5 s after SIGTERM to the started PID."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while not answers(port):
            if proc.poll() is not None or time.monotonic() - started > timeout_s:
                raise RuntimeError(f"{argv[:4]} did not answer on port {port}")
            time.sleep(0.2)
        up = time.monotonic() - started
        os.kill(proc.pid, signal.SIGTERM)  # `kill <pid>`, the PID the user started
        proc.wait(timeout=30)
        time.sleep(5)
        return up, answers(port)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the started process left behind
        except ProcessLookupError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one round, to check that the script runs")
    args = parser.parse_args()
    rounds = 1 if args.smoke else args.rounds

    from mlflow import MlflowClient

    root = Path(tempfile.mkdtemp(prefix="ganops-ui-bench-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()  # migrate once, outside the timing
    params = root / "params.yaml"
    params.write_text(f"registry:\n  tracking_uri: {uri}\n  artifact_location: {root / 'artifacts'}\n")
    unset = ("MLFLOW_TRACKING_URI", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])

    times: dict[str, list[float]] = {"reference": [], "ours": []}
    left: dict[str, list[bool]] = {"reference": [], "ours": []}
    for _ in range(rounds):
        for name in ("reference", "ours"):
            port = free_port()
            if name == "reference":
                argv = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
                        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--default-artifact-root",
                        (root / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port)]
            else:
                argv = [sys.executable, "-m", "flows.cli", "ui", "--params", str(params), "--port", str(port)]
            up, serving = start_and_kill(argv, port, env)
            times[name].append(up)
            left[name].append(serving)
            print(f"{name}: up in {up:.1f} s; still serving after kill <pid>: {serving}", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    ref, ours = statistics.median(times["reference"]), statistics.median(times["ours"])
    print(f"cpus {os.cpu_count()}; median start: reference {ref:.1f} s, ours {ours:.1f} s")
    print(f"still serving after kill <pid>: reference {any(left['reference'])}, ours {any(left['ours'])}")
    print(f"ratio reference/ours start time {ref / ours:.2f}x")


if __name__ == "__main__":
    main()
