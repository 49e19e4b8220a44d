"""A team's folder that grows every week, through the real flows: prepare and retrain on it, add images, run the
monitor. It sees the new data version, prepares incrementally (the old shards are the same files), pushes only the
new shards to the DVC remote, retrains and gates, re-measuring the champion in the new context. Real DVC repo and
remote in a temp dir, the session's Prefect harness, a private MLflow store, a tiny training."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def _add_images(folder: Path, first: int, per_class: int) -> None:
    """Noisy 12x12 RGB squares in the class colour: different files, easy classes (the lenet extractor learns them
    in one epoch)."""
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(first, first + per_class):
            rng = np.random.default_rng(i * len(COLOURS) + list(COLOURS).index(name))
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i:04d}.png")


def _objects(remote: Path) -> set[str]:
    """The objects in a local DVC remote (DVC 3 layout: files/md5/<2>/<30>[.dir])."""
    return {p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file()}


def _shards(prepared: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in (prepared / "shards").iterdir()}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_growing_folder_is_prepared_pushed_and_retrained_incrementally(tmp_path: Path, retrain_workspace) -> None:
    from flows.monitor import monitor
    from flows.retrain import retrain

    ws = retrain_workspace(tmp_path / "project")
    shutil.copytree(REPO / "gan_core", ws.root / "gan_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs" / "recipes", ws.root / "configs" / "recipes")  # the train stage's dependency
    # README, "Your own images": the image folder is a dependency of the prepare stage, so DVC sees it grow.
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    pipeline["stages"]["prepare"]["deps"].append("images")
    (ws.root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    params = yaml.safe_load(ws.params.read_text())
    params["data"] = {"source": "folder:images", "resolution": 16, "channels": 3, "shard_images": 50,
                      "prepared_dir": "data/prepared"}
    ws.params.write_text(yaml.safe_dump(params, sort_keys=False))
    remote = tmp_path / "remote"
    dvc = str(Path(sys.executable).parent / "dvc")
    for args in (["init", "-q"], ["remote", "add", "-d", "local", str(remote)]):
        subprocess.run([dvc, *args], cwd=ws.root, check=True, capture_output=True)
    _add_images(ws.root / "images", 0, 60)  # 180 images: shards of 50, 50, 50, 30
    prepared = ws.root / "data" / "prepared"

    with ws.entered():
        first = retrain(params="params.yaml")  # the repo's params.yaml: its data step is `dvc repro prepare`
        assert first["status"] == "promoted" and first["data"]["count"] == 180
        pushed = _objects(remote)
        shards = _shards(prepared)
        assert len(shards) == 4 * 3  # images, labels, rows per shard
        # Every file of the dataset (12 shard files, meta.json) and the directory listing (.dir) is in the remote.
        assert len(pushed) == 12 + 1 + 1

        _add_images(ws.root / "images", 60, 5)  # a week later: 15 new images (+8%)
        watched = monitor(params="params.yaml")

    new_version = watched["data_version"]
    assert new_version != first["data_version"] and watched["action"] == "retrain"
    assert any("data version changed" in r and first["data_version"] in r for r in watched["reasons"])
    # Prepared incrementally: the four old shards are the same files (same inodes), one new shard holds the new rows.
    after = _shards(prepared)
    assert {name: after[name] for name in shards} == shards
    assert sorted(set(after) - set(shards)) == ["000004.images.npy", "000004.labels.npy", "000004.rows.json"]
    # Pushed incrementally: the new shard's three files, the new meta.json and the new listing; nothing else.
    new_objects = _objects(remote) - pushed
    assert len(new_objects) == 3 + 1 + 1 and pushed <= _objects(remote)
    assert sum(1 for o in new_objects if o.endswith(".dir")) == 1
    # Retrained and gated on the new data, the champion re-measured in the new context (the lenet extractor was
    # retrained on the new data version, so its recorded numbers are not comparable).
    retrained = watched["retrain"]
    assert retrained["status"] in ("promoted", "rejected") and retrained["version"] == "2"
    assert retrained["data_version"] == new_version and retrained["data"]["count"] == 195
    comparison = retrained["gate"]["champion_comparison"]
    assert comparison["version"] == "1" and comparison["remeasured"] and comparison["unavailable"] is None
    assert ws.client().get_model_version(ws.config().registry.model_name, "2").tags["data_version"] == new_version
