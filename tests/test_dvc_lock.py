"""The committed dvc.lock must describe the committed code and params.yaml: a stale entry makes a fresh clone's
`dvc status` report a change nobody made, and `make demo` rewrite dvc.lock (tagging version 1 `git_dirty`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LOCK = yaml.safe_load((REPO / "dvc.lock").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())

FILE_DEPS = [
    (stage, dep)
    for stage, entry in LOCK["stages"].items()
    for dep in entry.get("deps", [])
    if (REPO / dep["path"]).is_file()
]
PARAMS_RECORDED = [
    (stage, key, value)
    for stage, entry in LOCK["stages"].items()
    for key, value in entry.get("params", {}).get("params.yaml", {}).items()
]


def _dotted(tree: dict, key: str):
    node = tree
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize(("stage", "dep"), FILE_DEPS, ids=[f"{s}:{d['path']}" for s, d in FILE_DEPS])
def test_recorded_code_matches_the_committed_files(stage: str, dep: dict) -> None:
    data = (REPO / dep["path"]).read_bytes()
    assert (hashlib.md5(data).hexdigest(), len(data)) == (dep["md5"], dep["size"]), (
        f"dvc.lock's {stage} stage records another {dep['path']}: run `dvc repro {stage}` (or `dvc commit {stage}`) "
        "and commit dvc.lock"
    )


@pytest.mark.parametrize(("stage", "key", "value"), PARAMS_RECORDED, ids=[f"{s}:{k}" for s, k, _ in PARAMS_RECORDED])
def test_recorded_params_match_params_yaml(stage: str, key: str, value) -> None:
    assert _dotted(PARAMS, key) == value, f"dvc.lock's {stage} stage records another {key}: run `dvc repro {stage}`"


def test_the_lock_records_the_data_version_readme_names() -> None:
    assert FILE_DEPS, "dvc.lock records no code dependency: the checks above would pass vacuously"
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
