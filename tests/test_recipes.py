"""Recipes (configs/recipes/<name>.yaml, `recipe=<name>`) and the wall-clock budget train.max_seconds (issue 17).

    OMP_NUM_THREADS=1 pytest -q tests/test_recipes.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gan_core.config import ConfigError, load_config, read_recipe, recipe_names
from gan_core.packaging.generator import read_spec
from gan_core.tracking.runs import training_label, training_tags
from gan_core.training.identity import identity_key, resumable, training_identity
from gan_core.training.loop import train

REPO = Path(__file__).resolve().parents[1]
RECIPES = ["conditional", "hinge", "lsgan", "mlp", "rgb64", "stylegan2", "wgan", "wgan-gp"]


def test_every_recipe_is_listed_and_sets_only_what_shapes_the_weights() -> None:
    assert recipe_names() == RECIPES
    for name in RECIPES:
        cfg = load_config(REPO / "params.yaml", [f"recipe={name}"])
        assert cfg.recipe == name


def test_precedence_params_file_then_recipe_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # configs/recipes of the working directory's project
    (tmp_path / "configs" / "recipes").mkdir(parents=True)
    (tmp_path / "configs" / "recipes" / "mine.yaml").write_text(
        "model: {conditional: true}\ntrain: {steps: 30, g_optimizer: {lr: 0.001}}\n")
    params = tmp_path / "params.yaml"
    params.write_text("recipe: mine\ntrain: {steps: 10, batch_size: 16, g_optimizer: {betas: [0.0, 0.9]}}\n")
    cfg = load_config(params)
    assert cfg.recipe == "mine" and cfg.model.conditional and cfg.train.steps == 30  # the recipe beats the file
    assert cfg.train.batch_size == 16 and cfg.train.g_optimizer.betas == (0.0, 0.9)  # keys it leaves: the file's
    assert cfg.train.g_optimizer.lr == 0.001  # merged key by key
    assert load_config(params, ["train.steps=5"]).train.steps == 5  # overrides beat the recipe
    off = load_config(params, ["recipe=null"])
    assert off.recipe is None and off.train.steps == 10 and not off.model.conditional


def test_unknown_recipes_and_recipes_that_set_other_sections_fail_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'nope'; known recipes: conditional, hinge, .*wgan-gp") as e:
        load_config(REPO / "params.yaml", ["recipe=nope"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown recipe '../params'"):
        load_config(REPO / "params.yaml", ["recipe=../params"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / "recipes").mkdir(parents=True)
    (tmp_path / "configs" / "recipes" / "elsewhere.yaml").write_text(
        "data: {source: digits}\nregistry: {model_name: mine, tracking_uri: 'sqlite:///x.db'}\n")
    with pytest.raises(ConfigError, match="a recipe sets only model, train, gate and registry.model_name keys, "
                                          "not data, registry.tracking_uri"):
        load_config(None, ["recipe=elsewhere"])


def test_the_conditional_recipe_is_its_own_registered_model_with_a_class_accuracy_bar() -> None:
    cfg = load_config(REPO / "params.yaml", ["recipe=conditional"])
    defaults = load_config(REPO / "params.yaml")
    assert cfg.registry.model_name == "ganops-conditional" != defaults.registry.model_name
    assert cfg.gate.thresholds["class_accuracy"].min == 0.95
    assert cfg.gate.thresholds.keys() - {"class_accuracy"} == defaults.gate.thresholds.keys()  # merged, not replaced
    with pytest.raises(ConfigError, match="'class_accuracy' is computed for conditional generators only"):
        load_config(REPO / "params.yaml", ["recipe=conditional", "model.conditional=false"])


def test_a_recipe_is_the_settings_it_resolves_to_for_the_identity() -> None:
    def key(overrides: list[str] | dict) -> str:
        return identity_key(training_identity(load_config(REPO / "params.yaml", overrides).model_dump(mode="json"),
                                              "d" * 32 + ".dir", "c" * 16))

    def dotted(tree: dict, prefix: str = "") -> dict:
        out: dict = {}
        for k, v in tree.items():
            out.update(dotted(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    written_out = dotted(read_recipe("mlp"))  # the same keys as overrides, without the name
    assert key(["recipe=mlp"]) == key(written_out)
    assert key(["recipe=mlp"]) != key([])


def test_max_seconds_is_part_of_the_identity_and_continuable() -> None:
    def ident(overrides: list[str]) -> dict:
        return training_identity(load_config(REPO / "params.yaml", overrides).model_dump(mode="json"), "d", "c")

    assert identity_key(ident(["train.max_seconds=60"])) != identity_key(ident([]))
    assert resumable(ident(["train.max_seconds=120"]), ident(["train.max_seconds=60"]))


def test_the_recipe_names_the_run_and_tags_it(mnist_prepared: Path, tiny_train_config) -> None:
    cfg = tiny_train_config(mnist_prepared, recipe="hinge")
    assert training_label(cfg) == "hinge-dcgan-hinge-4steps"
    assert training_tags(cfg)["recipe"] == "hinge"
    assert "recipe" not in training_tags(tiny_train_config(mnist_prepared))


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_trains_a_few_tiny_steps(name: str, mnist_prepared: Path, tiny_train_config,
                                             one_cpu_thread: None) -> None:
    # Tiny widths and 2 steps (the fixture's overrides win over the recipe): it parses, builds and steps.
    cfg = tiny_train_config(mnist_prepared, recipe=name, **{"train.steps": 2, "train.sample_every": 2,
                                                           "train.checkpoint_every": 2, "train.ema_decay": 0.0})
    result = train(cfg)
    assert result.steps == 2 and not result.stopped_by_time
    assert read_spec(result.package_dir)["metadata"]["recipe"] == name


def test_max_seconds_stops_early_writes_everything_and_counts_over_resumes(
    mnist_prepared: Path, tiny_train_config, one_cpu_thread: None
) -> None:
    cfg = tiny_train_config(mnist_prepared, **{"train.steps": 50, "train.max_seconds": 1e-6})
    first = train(cfg)  # the budget is spent after the first step: it stops there, like a last step
    assert (first.steps, first.trained_steps, first.stopped_by_time) == (1, 1, True)
    metrics = json.loads(Path(first.metrics_path).read_text())
    assert metrics["steps"] == 1 and metrics["stopped_by_time"] == 1 and metrics["train_seconds"] > 0
    spec = read_spec(first.package_dir)["metadata"]
    assert spec["steps"] == 1 and spec["stopped_by"] == "max_seconds"
    assert Path(first.checkpoint).is_file() and Path(first.last_samples).name == "step_000001.png"

    again = train(cfg)  # the same training: its budget is spent, so nothing more runs (as at train.steps)
    assert (again.steps, again.trained_steps, again.resumed_from) == (1, 0, 1)
    more = train(tiny_train_config(mnist_prepared, **{"train.steps": 6, "train.max_seconds": 3600}))
    assert (more.steps, more.trained_steps, more.resumed_from, more.stopped_by_time) == (6, 5, 1, False)
