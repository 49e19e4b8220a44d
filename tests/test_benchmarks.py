"""Benchmarks cannot rot: every script in benchmarks/ runs at a tiny size (its --smoke flag: seconds, outputs in a
temp dir, never in the repo) in its own process, completes, and prints its ratio. What they measure is in
benchmarks/README.md; here only that they still run against today's code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "benchmarks").glob("*.py"))
SERVICES = {"scale_services.py"}
"""Benchmarks that start the shared services (PostgreSQL, S3, an MLflow server): `scale` tests, as test_scale."""
RATIO = re.compile(r"ratio[^\n]*?\d+\.\d+\s*[x×]")
"""A printed ratio: `... ratio 1.01x`, `ratio server/embedded 1.01x`."""


def test_every_benchmark_is_covered() -> None:
    assert {"train_throughput.py", "eval_throughput.py", "quality_per_time.py", "recipes.py",
            "scale_services.py"} <= set(SCRIPTS)


@pytest.mark.slow
@pytest.mark.parametrize("script", [pytest.param(s, marks=[pytest.mark.scale] if s in SERVICES else [])
                                    for s in SCRIPTS])
def test_every_benchmark_runs_at_a_tiny_size_and_prints_its_ratio(script: str, tmp_path: Path) -> None:
    args = ["--root", str(tmp_path / "work")] if script == "eval_throughput.py" else []
    recorded = _recorded_results()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--smoke", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert RATIO.search(done.stdout), f"{script} printed no ratio:\n{done.stdout[-2000:]}"
    assert _recorded_results() == recorded, f"{script} --smoke wrote over recorded results"


def _recorded_results() -> dict[str, int]:
    """The files a full run records (benchmarks/results, docs/), by modification time."""
    files = [*(REPO / "benchmarks" / "results").rglob("*"), *(REPO / "docs").rglob("*")]
    return {str(p): p.stat().st_mtime_ns for p in files if p.is_file()}
