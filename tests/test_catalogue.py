"""The family catalogue (gan_core.config.catalogue): torch-free, one owner per setting, and what each family says
it supports is what it accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from translation import TRANSLATION_SETTINGS

from gan_core.config import ModelConfig, TrainConfig, load_config
from gan_core.config.catalogue import (
    FAMILIES,
    GENERATION,
    SHIPPED,
    TASKS,
    FamilyInfo,
    family_info,
    family_names,
    model_sections,
    register,
    train_sections,
    unregister,
)
from gan_core.config.schema import LoopSettings, SharedModelConfig, StepSettings
from gan_core.errors import ConfigError, UserError
from gan_core.models import family
from gan_core.models.losses import LOSSES

REPO = Path(__file__).resolve().parents[1]


def test_the_catalogue_and_the_config_import_without_torch() -> None:
    code = ("import sys, gan_core.config.catalogue, gan_core.config; "
            "from gan_core.config import load_config; load_config('params.yaml'); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "importing the catalogue imported torch"


def test_every_family_module_provides_what_the_loop_and_the_loader_use() -> None:
    assert list(SHIPPED) == family_names() == ["mlp", "dcgan", "stylegan2", "cyclegan"]
    for name in SHIPPED:
        fam = family(name)
        assert fam.info is family_info(name) and fam.task in TASKS
        for part in (fam.Generator, fam.Discriminator):
            assert issubclass(part, torch.nn.Module)
        assert callable(fam.TrainingStep) and hasattr(fam.TrainingStep, "sample_grid")


def test_a_setting_belongs_to_the_shared_settings_or_to_one_family() -> None:
    owners: dict[str, list[str]] = {}
    for shared in (SharedModelConfig, StepSettings, LoopSettings):
        for key in shared.model_fields:
            owners.setdefault(key, []).append(shared.__name__)
    for info in FAMILIES.values():
        for section in (info.model_options, info.train_options):
            for key in (section.model_fields if section else {}):
                owners.setdefault(key, []).append(info.name)
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}
    # ModelConfig and TrainConfig are the shared settings plus every family's, nothing else.
    assert set(ModelConfig.model_fields) == set(SharedModelConfig.model_fields).union(
        *(s.model_fields for s in model_sections()))
    assert set(TrainConfig.model_fields) == set(StepSettings.model_fields).union(
        *(s.model_fields for s in train_sections()), LoopSettings.model_fields)
    assert {"mapping_layers", "res_blocks"} <= set(ModelConfig.model_fields)


def test_family_settings_keep_their_keys_defaults_and_checks() -> None:
    cfg = load_config(REPO / "params.yaml", ["model.mapping_layers=2", "train.cycle_weight=5", "train.pl_weight=2"])
    assert (cfg.model.mapping_layers, cfg.train.cycle_weight, cfg.train.pl_weight) == (2, 5.0, 2.0)
    with pytest.raises(ConfigError, match=r"model.mapping_layers: Input should be greater than or equal to 1"):
        load_config(REPO / "params.yaml", ["model.mapping_layers=0"])
    with pytest.raises(ConfigError, match=r"train.style_mixing: Input should be less than or equal to 1 \(got 2\)"):
        load_config(REPO / "params.yaml", ["train.style_mixing=2"])
    with pytest.raises(ConfigError, match=r"model.arch: Input should be 'mlp', 'dcgan', 'stylegan2' or 'cyclegan' "
                                          r"\(got 'resnet'\)"):
        load_config(REPO / "params.yaml", ["model.arch=resnet"])
    # In the order params.yaml lists them: shared, then each family's (catalogue order), then the loop's.
    model_keys, train_keys = list(cfg.model_dump()["model"]), list(cfg.model_dump()["train"])
    assert model_keys[-2:] == ["mapping_layers", "res_blocks"]
    assert train_keys[train_keys.index("r1_every") + 1:train_keys.index("augment")] == [
        "style_mixing", "pl_weight", "pl_every", "cycle_weight", "identity_weight", "pool_size", "semantic_weight",
        "holdout_fraction"]


def _model(arch: str, **settings: object) -> ModelConfig:
    return ModelConfig(arch=arch, g_width=4, d_width=4, **settings)


@pytest.mark.parametrize("arch", SHIPPED)
def test_each_family_accepts_exactly_the_losses_and_options_it_declares(arch: str) -> None:
    fam, supports = family(arch), family_info(arch).supports
    for loss in LOSSES:
        if supports.losses is None or loss in supports.losses:
            fam.discriminator_kwargs(_model(arch), loss, (1, 32, 32), 0)
        else:
            with pytest.raises(UserError, match=f"train.loss='{loss}'"):
                fam.discriminator_kwargs(_model(arch), loss, (1, 32, 32), 0)
    sn = _model(arch, spectral_norm=True)
    if supports.spectral_norm:
        fam.discriminator_kwargs(sn, "nonsaturating", (1, 32, 32), 0)
    else:
        with pytest.raises(UserError, match="model.spectral_norm=true"):
            fam.discriminator_kwargs(sn, "nonsaturating", (1, 32, 32), 0)
    if supports.conditional:
        for mode in ("projection", "concat"):
            cond = _model(arch, conditional=True, cond_mode=mode)
            if mode in supports.cond_modes:
                fam.discriminator_kwargs(cond, "nonsaturating", (1, 32, 32), 10)
            else:
                with pytest.raises(UserError, match=f"model.cond_mode='{mode}'"):
                    fam.discriminator_kwargs(cond, "nonsaturating", (1, 32, 32), 10)


@pytest.mark.parametrize("arch", SHIPPED)
def test_each_family_builds_exactly_the_resolutions_it_declares(arch: str) -> None:
    fam, supports = family(arch), family_info(arch).supports
    for side in range(8, 300):
        model = _model(arch)
        with torch.device("meta"):  # shapes only: no memory, no time
            try:
                fam.Generator(**fam.generator_kwargs(model, (1, side, side), 0))
                fam.Discriminator(**fam.discriminator_kwargs(model, "lsgan", (1, side, side), 0))
                built = True
            except UserError:
                built = False
        assert built == supports.resolution(side), (arch, side)


@pytest.mark.parametrize("arch", SHIPPED)
def test_labels_and_several_critic_steps_are_refused_at_load_by_the_families_that_take_none(arch: str) -> None:
    supports = family_info(arch).supports
    base = {**TRANSLATION_SETTINGS} if family_info(arch).task != GENERATION else {"model.arch": arch}
    for key, value, accepted in (("model.conditional", True, supports.conditional),
                                 ("train.n_critic", 2, supports.n_critic)):
        if accepted:
            load_config(None, {**base, key: value})
        else:
            with pytest.raises(ConfigError, match=f"{key}={str(value).lower()}: {arch} "):
                load_config(None, {**base, key: value})


def test_a_test_family_can_be_registered_but_brings_no_settings_and_ships_nothing() -> None:
    info = FamilyInfo("tiny", "linear_family", GENERATION)
    register(info)
    try:
        assert family_info("tiny") is info and "tiny" in family_names() and "tiny" not in SHIPPED
        assert load_config(None, {"model.arch": "tiny"}).model.arch == "tiny"
        with pytest.raises(ValueError, match="in the catalogue already"):
            register(info)
    finally:
        unregister("tiny")
    with pytest.raises(ConfigError, match=r"model.arch: Input should be .* or 'cyclegan' \(got 'tiny'\)"):
        load_config(None, {"model.arch": "tiny"})
    with pytest.raises(ValueError, match="declares settings of its own"):
        register(FamilyInfo("own", "linear_family", GENERATION, model_options=SharedModelConfig))
    with pytest.raises(ValueError, match="ships with ganops"):
        unregister("dcgan")
    with pytest.raises(UserError, match=r"unknown architecture 'tiny'; expected one of \["):
        family("tiny")


def test_every_stage_keeps_one_entry_per_task_kind() -> None:
    """Adding a task kind registers one module per stage: each stage's table names every kind, and nothing else."""
    from gan_core.evaluation.evaluate import EVALUATORS
    from gan_core.models import SHARED_ARGUMENTS
    from gan_core.packaging import PACKAGES
    from gan_core.serving.mlflow_models import MLFLOW_MODELS
    from gan_core.training.tasks import TRAINING

    for table in (SHARED_ARGUMENTS, TRAINING, PACKAGES, EVALUATORS, MLFLOW_MODELS):
        assert set(table) == set(TASKS)
    assert {t.spec_file for t in TASKS.values()} == {"generator.json", "translator.json"}
    assert {t.command for t in TASKS.values()} == {"generate", "translate"}
    import gan_core

    uri = "models:/m@champion"
    for kind in TASKS.values():  # the usage lines a registered model's description and `ganops` print
        assert f"gan_core.load_{kind.package}('{uri}'" in kind.load_example.format(uri=uri)
        assert callable(getattr(gan_core, f"load_{kind.package}"))
        assert kind.command_example.format(uri=uri).startswith(f"ganops {kind.command} --model ")


def test_a_package_says_its_task_kind_by_its_spec_file(generator_package: Path, translator_package: Path) -> None:
    from gan_core.config.catalogue import TRANSLATION
    from gan_core.packaging import package_task, read_package_spec

    assert package_task(generator_package) == GENERATION and package_task(translator_package) == TRANSLATION
    assert read_package_spec(generator_package)["format"] == "ganops-generator/1"
    assert read_package_spec(translator_package)["format"] == "ganops-translator/1"
    with pytest.raises(UserError, match="not a generator package"):
        read_package_spec(generator_package.parent)
