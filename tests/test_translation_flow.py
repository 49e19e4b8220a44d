"""A translation retrain end to end: real Prefect (the session harness), a real MLflow SQLite store, a real
two-domain prepare (digits ↔ mnist5k at 16 px), cyclegan training, translation evaluation, the gate and the alias."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml


@pytest.fixture(scope="module")
def translation_workspace(tmp_path_factory: pytest.TempPathFactory, retrain_workspace) -> Iterator[Any]:
    ws = retrain_workspace(tmp_path_factory.mktemp("translation"))
    params = yaml.safe_load(ws.params.read_text())
    params["data"].update(source="digits", target="mnist5k", max_images=300)
    params["model"] = {"arch": "cyclegan", "g_width": 4, "d_width": 4, "res_blocks": 1}
    params["train"].update(loss="lsgan", steps=6, batch_size=4, log_every=3, sample_every=6, checkpoint_every=6)
    params["eval"]["classifier"].update(epochs=2, min_accuracy=0.0)
    # 6 steps translate badly: thresholds loose enough that the first candidate becomes champion.
    params["gate"] = {"thresholds": {"fid_lenet_a2b": {"max": 1.0e9}, "content_lenet_a2b": {"min": 0.0}},
                      "primary_metric": "fid_lenet_a2b"}
    params["registry"]["model_name"] = "test-translator"
    ws.params.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
        mp.chdir(ws.root)
        yield ws


@pytest.mark.slow
def test_a_translation_retrain_ends_with_a_champion_translator(prefect_harness: None,
                                                                translation_workspace: Any) -> None:
    from flows.retrain import retrain
    from gan_core import load_generator, load_translator
    from gan_core.errors import UserError
    from gan_core.packaging.translator import translate_images

    ws = translation_workspace
    result = retrain(params=str(ws.params))
    assert result["status"] == "promoted", result
    metrics = result["metrics"]
    for name in ("fid_lenet_a2b", "fid_lenet_b2a", "content_lenet_a2b", "content_lenet_b2a", "cycle_l1_a",
                 "cycle_l1_b", "classifier_accuracy_a", "classifier_accuracy_b"):
        assert name in metrics and metrics[name] == metrics[name], name
    client = ws.client()
    champion = client.get_model_version_by_alias("test-translator", "champion")
    assert str(champion.version) == str(result["version"]) == "1"
    # The champion translates: both directions of the registered model, as a consumer pulls them.
    uri = "models:/test-translator@champion"
    b2a = load_translator(uri, direction="b2a")
    images = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    assert translate_images(b2a, images).shape == (2, 1, 16, 16)
    with pytest.raises(UserError, match="load_translator"):
        load_generator(uri)
    # In MLflow it is what it is: its own experiment, described as translators, its model named `translator`,
    # its dataset input naming both domains (A ↔ B), its description saying so.
    run = client.get_run(result["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "test-translator" and "translator" in experiment.tags["mlflow.note.content"]
    assert "generator" not in experiment.tags["mlflow.note.content"]
    assert [m.name for m in client.search_logged_models([experiment.experiment_id])] == ["translator"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "digits ↔ mnist5k"
    assert run.data.tags["mlflow.note.content"].startswith("Translator `cyclegan` (lsgan loss, 6 steps, batch 4) "
                                                          "trained on digits ↔ mnist5k at 16 px")

    # Unchanged inputs: nothing is trained again.
    again = retrain(params=str(ws.params))
    assert again["status"] == "skipped" and again["version"] == "1"
    assert Path(ws.root / "train" / "samples").is_dir()
