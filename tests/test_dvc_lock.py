"""The committed dvc.lock must describe the committed code and params.yaml: a stale entry makes a fresh clone's
`dvc status` report a change nobody made, and `make demo` rewrite dvc.lock (tagging version 1 `git_dirty`)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCK = yaml.safe_load((REPO / "dvc.lock").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())

PARAMS_RECORDED = [
    (stage, key, value)
    for stage, entry in LOCK["stages"].items()
    for key, value in entry.get("params", {}).get("params.yaml", {}).items()
]
OUTPUTS = {out["path"] for entry in LOCK["stages"].values() for out in entry.get("outs", [])}


def _dotted(tree: dict, key: str):
    node = tree
    for part in key.split("."):
        node = node[part]
    return node


def test_dvc_sees_no_change_to_the_code_or_params_the_lock_records() -> None:
    """DVC's own view (it honours .dvcignore: no __pycache__). Only outputs a clone lacks yet may differ."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    changed = []
    for stage, entries in json.loads(result.stdout).items():
        for entry in entries:
            deps = (entry.get("changed deps") if isinstance(entry, dict) else None) or {}  # a clone: outs only
            for path, change in deps.items():
                if path not in OUTPUTS:
                    changed.append(f"{stage}: {path} {change}")
    assert not changed, (f"dvc.lock records other code or params than the committed ones: {changed}; run "
                         "`make demo` (or `dvc repro`, or `dvc commit -f <stage>` for a change that cannot alter "
                         "results) and commit dvc.lock")


@pytest.mark.parametrize(("stage", "key", "value"), PARAMS_RECORDED, ids=[f"{s}:{k}" for s, k, _ in PARAMS_RECORDED])
def test_recorded_params_match_params_yaml(stage: str, key: str, value) -> None:
    assert _dotted(PARAMS, key) == value, f"dvc.lock's {stage} stage records another {key}: run `dvc repro {stage}`"


def test_the_lock_records_the_code_and_the_data_version_readme_names() -> None:
    for stage in ("prepare", "classifier", "train", "evaluate"):
        assert any(dep["path"] == "gan_core" for dep in LOCK["stages"][stage]["deps"]), stage
    (out,) = LOCK["stages"]["prepare"]["outs"]
    assert out["path"] == "data/prepared" and out["md5"].endswith(".dir")


METRICS = [out["path"] for entry in LOCK["stages"].values() for out in entry.get("outs", [])
           if out["path"].endswith("metrics.json")]


@pytest.mark.parametrize("path", METRICS)
def test_committed_metrics_are_numbers_that_the_lock_records(path: str) -> None:
    """git keeps the metrics JSONs (so `dvc exp show`/`dvc metrics diff` read main's), and DVC compares numbers only."""
    data = (REPO / path).read_bytes()
    (out,) = [o for entry in LOCK["stages"].values() for o in entry.get("outs", []) if o["path"] == path]
    assert (hashlib.md5(data).hexdigest(), len(data)) == (out["md5"], out["size"]), f"dvc.lock records another {path}"
    values = json.loads(data)
    assert values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()), values


def test_every_stage_has_its_metrics_in_git() -> None:
    assert set(METRICS) == {"outputs/classifier/metrics.json", "outputs/train/metrics.json",
                            "outputs/eval/metrics.json"}
