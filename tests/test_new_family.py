"""Adding a family is one module plus one catalogue entry: tests/linear_family.py, registered here (never shipped),
trains, packages, evaluates, registers and serves through the same code as the shipped families, the retrain flow
included, with no other edit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import linear_family
import pytest
import torch
import yaml

from gan_core.config.catalogue import register, unregister
from gan_core.errors import ConfigError, UserError


@pytest.fixture(scope="module")
def linear() -> Iterator[None]:
    register(linear_family.ENTRY)
    yield
    unregister(linear_family.ENTRY.name)


def test_a_registered_family_trains_packages_and_loads(linear: None, mnist_prepared: Path, tiny_train_config) -> None:
    from gan_core.packaging.generator import load_generator, read_spec, sample_images
    from gan_core.training.loop import train

    cfg = tiny_train_config(mnist_prepared, **{"model.arch": "linear", "train.steps": 4})
    result = train(cfg)
    assert read_spec(result.package_dir)["arch"] == "linear"
    G = load_generator(result.package_dir)
    assert isinstance(G, linear_family.Generator)
    assert sample_images(G, 3, seed=0).shape == (3, 1, 32, 32)
    # What its entry says it does not support is refused as for any family.
    with pytest.raises(ConfigError, match="model.conditional=true: linear draws images from noise and takes no"):
        tiny_train_config(mnist_prepared, **{"model.arch": "linear", "model.conditional": True})


def test_its_packages_load_only_while_it_is_in_the_catalogue(linear: None, tmp_path: Path) -> None:
    from gan_core.models import build_generator
    from gan_core.packaging.generator import load_generator, save_generator

    kwargs = {"latent_dim": 4, "channels": 1, "resolution": 8, "width": 4, "num_classes": 0}
    spec = {"arch": "linear", "kwargs": kwargs, "latent_dim": 4, "image_shape": [1, 8, 8], "num_classes": 0}
    package = save_generator(build_generator("linear", **kwargs), spec, tmp_path / "generator")
    unregister("linear")
    try:
        # The package names a family the catalogue does not hold: nothing is imported by that name.
        with pytest.raises(UserError, match="cannot build arch 'linear'.*unknown architecture 'linear'"):
            load_generator(package)
    finally:
        register(linear_family.ENTRY)
    assert isinstance(load_generator(package), linear_family.Generator)


@pytest.fixture(scope="module")
def workspace(linear: None, tmp_path_factory: pytest.TempPathFactory, retrain_workspace) -> Iterator[Any]:
    ws = retrain_workspace(tmp_path_factory.mktemp("linear"))
    params = yaml.safe_load(ws.params.read_text())
    params["model"] = {"arch": "linear", "latent_dim": 16, "g_width": 4, "d_width": 4}
    params["registry"]["model_name"] = "test-linear"
    ws.params.write_text(yaml.safe_dump(params, sort_keys=False))
    with ws.entered():
        yield ws


@pytest.mark.slow
def test_a_registered_family_goes_through_the_retrain_flow_to_a_served_champion(prefect_harness: None,
                                                                                workspace: Any) -> None:
    import mlflow
    import pandas as pd

    from flows.retrain import retrain
    from gan_core import load_generator
    from gan_core.packaging.generator import sample_images
    from gan_core.serving.generator_model import decode_predictions

    result = retrain(params=str(workspace.params))
    assert result["status"] == "promoted", result
    assert {"fid_lenet", "class_coverage"} <= set(result["metrics"])
    client = workspace.client()
    champion = client.get_model_version_by_alias("test-linear", "champion")
    assert str(champion.version) == str(result["version"]) == "1"
    assert client.get_run(result["run_id"]).data.params["model.arch"] == "linear"
    uri = "models:/test-linear@champion"
    G = load_generator(uri)
    assert isinstance(G, linear_family.Generator)
    assert sample_images(G, 4, seed=1).shape == (4, 1, 16, 16)
    served = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame([{"n": 3, "seed": 0}]))
    assert torch.equal(decode_predictions(served), sample_images(G, 3, seed=0))
