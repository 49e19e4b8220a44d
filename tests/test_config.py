"""The typed config: params.yaml, dotted overrides, --params, and one-line errors that name the key path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gan_core.cli import app, run_app
from gan_core.config import Config, ConfigError, load_config, parse_overrides
from gan_core.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_repo_params_yaml_loads_and_every_value_lands_in_the_tree() -> None:
    cfg = load_config(REPO / "params.yaml")
    raw = _flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    loaded = cfg.flat()
    for key, value in raw.items():
        expected = list(value) if isinstance(value, list | tuple) else value
        got = list(loaded[key]) if isinstance(loaded[key], list | tuple) else loaded[key]
        assert got == expected, key


def test_overrides_are_parsed_as_yaml_scalars_and_win_over_the_file() -> None:
    cfg = load_config(
        REPO / "params.yaml",
        [
            "train.steps=200",
            "train.compile=true",
            "train.g_optimizer.lr=1e-3",
            "data.max_images=null",
            "data.source=folder:imgs",
            "eval.extractors=[lenet,inception]",
            "train.g_optimizer.betas=[0.0,0.9]",
        ],
    )
    assert cfg.train.steps == 200 and isinstance(cfg.train.steps, int)
    assert cfg.train.compile is True
    assert cfg.train.g_optimizer.lr == pytest.approx(1e-3)
    assert cfg.train.d_optimizer.lr == pytest.approx(2e-4)  # a sibling section is untouched
    assert cfg.data.max_images is None
    assert cfg.data.source == "folder:imgs"
    assert cfg.eval.extractors == ["lenet", "inception"]
    assert cfg.train.g_optimizer.betas == (0.0, 0.9)


def test_overrides_as_a_dict_are_the_same_as_strings() -> None:
    from_strings = load_config(REPO / "params.yaml", ["train.steps=7", "data.source=digits"])
    from_dict = load_config(REPO / "params.yaml", {"train.steps": 7, "data.source": "digits"})
    assert from_strings == from_dict
    assert parse_overrides(["a.b=1", "c=x=y"]) == {"a.b": 1, "c": "x=y"}


def test_params_option_reads_another_file(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  steps: 7\ndata:\n  source: digits\n  resolution: 16\n")
    cfg = load_config(other)
    assert (cfg.train.steps, cfg.data.source, cfg.data.resolution) == (7, "digits", 16)
    assert cfg.model == Config().model  # sections the file leaves out keep their defaults
    assert load_config(other, ["train.steps=9"]).train.steps == 9


@pytest.mark.parametrize(
    ("override", "key_path", "hint"),
    [
        (["train.stepz=5"], "train.stepz", "unknown key"),
        (["nosuchsection.x=1"], "nosuchsection", "unknown key"),
        (["train.steps=abc"], "train.steps", "valid integer"),
        (["train.compile=maybe"], "train.compile", "boolean"),
        (["data.resolution=4"], "data.resolution", "greater than or equal to 8"),
        (["data.resolution=4096"], "data.resolution", "less than or equal to 1024"),
        (["data.channels=2"], "data.channels", "1 or 3"),
        (["data.max_images=0"], "data.max_images", "greater than or equal to 1"),
        (["data.source=bogus"], "data.source", "mnist5k, digits, torchvision:<Name> or folder:<path>"),
        (["data.source=folder:"], "data.source", "folder:<path>"),
        (["train.g_optimizer.betas=[0.5,2]"], "train.g_optimizer.betas", "[0, 1)"),
        (["train.device=tpu"], "train.device", "cuda:N"),
        (["gate.thresholds.fid_lenet.max=abc"], "gate.thresholds.fid_lenet.max", "number"),
        (["train.steps"], "train.steps", "key=value"),
        (["=5"], "=5", "key=value"),
        (["train.steps.x=1"], "train.steps.x", "not a section"),
    ],
)
def test_bad_values_fail_at_load_with_one_line_naming_the_key(override: list[str], key_path: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "params.yaml", override)
    message = str(caught.value)
    assert key_path in message and hint in message
    assert "\n" not in message
    assert isinstance(caught.value, UserError)


def test_bad_params_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("data:\n  resolutoin: 16\n")
    with pytest.raises(ConfigError, match=r"data\.resolutoin: unknown key"):
        load_config(tmp_path / "typo.yaml")


def test_config_hash_is_stable_and_sees_every_change() -> None:
    base = load_config(REPO / "params.yaml")
    assert base.hash() == load_config(REPO / "params.yaml").hash()
    changed = load_config(REPO / "params.yaml", ["train.steps=3"])
    assert changed.hash() != base.hash()
    assert changed.hash("data") == base.hash("data")  # a per-section hash ignores other sections


def test_cli_prints_config_errors_as_one_line_and_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = run_app(app, ["prepare", "data.resolution=abc", f"data.prepared_dir={tmp_path / 'p'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and "data.resolution" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p").exists()  # nothing ran on the half-valid config

    code = run_app(app, ["prepare", "--params", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "nope.yaml" in err and len(err.splitlines()) == 1


def test_python_m_gan_core_bad_value_exits_2_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "gan_core", "prepare", "data.channels=2", f"data.prepared_dir={tmp_path / 'p'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.channels" in lines[0] and "1 or 3" in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["train", "--bogus"], "No such option: --bogus"), (["prepare", "--params"], "requires an argument")],
)
def test_cli_usage_errors_exit_2_without_traceback(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_app(app, argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_prepare_prints_where_and_the_data_version(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from gan_core.lineage import data_version

    out = tmp_path / "prepared"
    code = run_app(app, ["prepare", "data.max_images=20", "data.resolution=8", f"data.prepared_dir={out}"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert Path(printed["prepared_dir"]) == out.resolve()
    assert printed["count"] == 20 and printed["shape"] == [1, 8, 8]
    assert printed["data_version"] == data_version(out)
    assert printed["data_version"].endswith(".dir")
