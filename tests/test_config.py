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
    assert cfg.train.d_optimizer.lr == pytest.approx(0.0018)  # a sibling section keeps params.yaml's value
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
    from gan_core.data.version import data_version

    out = tmp_path / "prepared"
    code = run_app(app, ["prepare", "data.max_images=20", "data.resolution=8", f"data.prepared_dir={out}", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert Path(printed["prepared_dir"]) == out.resolve()
    assert printed["count"] == 20 and printed["shape"] == [1, 8, 8]
    assert printed["data_version"] == data_version(out)
    assert printed["data_version"].endswith(".dir")
    # Without --json: one line for a person (what `dvc repro` shows), the numbers in meta.json.
    assert run_app(app, ["prepare", "data.max_images=20", "data.resolution=8", f"data.prepared_dir={out}"]) == 0
    assert capsys.readouterr().out == (f"prepared 20 images from mnist5k (1×8×8) into {out}: data version "
                                       f"{printed['data_version']}\n")


# ----------------------------------------------------------------------------- override values are literal
@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("folder:/data/shots #2", "folder:/data/shots #2"),  # YAML would drop " #2" as a comment
        ("x #1", "x #1"),
        ("'x #1'", "x #1"),  # quotes: the string inside
        ('"null"', "null"),
        ("'[a, b]'", "[a, b]"),
        ("[lenet, inception]", ["lenet", "inception"]),  # a flow list
        ("[a, 'b #2']", ["a", "b #2"]),
        ("{max: 1.5}", {"max": 1.5}),  # a flow mapping
        ("null", None),
        ("~", None),
        ("200", 200),  # integers that print back the same
        ("-3", -3),
        ("0", 0),
        ("007", "007"),  # YAML 1.1 octal (7) and the rest stay as written; typed fields convert them
        ("0x1F", "0x1F"),
        ("1:30", "1:30"),  # YAML 1.1 sexagesimal: 90
        ("1_000", "1_000"),
        ("2e-4", "2e-4"),
        ("1.5", "1.5"),
        ("true", "true"),
        ("yes", "yes"),
        ("", ""),
        ("a=b", "a=b"),
        ("folder:", "folder:"),  # YAML: the mapping {folder: None}
        ("&anchor x", "&anchor x"),
        ("!!python/name:os.system", "!!python/name:os.system"),  # never reaches a YAML constructor
        (" spaced ", " spaced "),
        ("[a,\n# b\n c]", "[a,\n# b\n c]"),  # multi-line: YAML would drop the comment line
    ],
)
def test_override_values_are_literal_strings_unless_explicit_yaml(raw: str, parsed: object) -> None:
    assert parse_overrides([f"x.y={raw}"]) == {"x.y": parsed}


def test_typed_fields_still_validate_from_literal_override_strings() -> None:
    cfg = load_config(
        REPO / "params.yaml",
        [
            "train.steps=200",
            "eval.extractors=[lenet,inception]",
            "model.conditional=true",
            "model.spectral_norm=yes",
            "train.g_optimizer.lr=2e-4",
            "train.d_optimizer.lr=1.5e-3",
            "data.channels=3",
            "data.max_images=null",
            "registry.experiment=2024",  # a name written as a number stays that name
            "registry.model_name='null'",
            "gate.thresholds.fid_lenet.max=50",
            "gate.min_improvement=0.05",
            "train.g_optimizer.betas=[0.0, 0.9]",
        ],
    )
    assert cfg.train.steps == 200 and isinstance(cfg.train.steps, int)
    assert cfg.eval.extractors == ["lenet", "inception"]
    assert cfg.model.conditional is True and cfg.model.spectral_norm is True
    assert cfg.train.g_optimizer.lr == 2e-4 and cfg.train.d_optimizer.lr == 1.5e-3
    assert cfg.data.channels == 3 and cfg.data.max_images is None
    assert cfg.registry.experiment == "2024" and cfg.registry.model_name == "null"
    assert cfg.gate.thresholds["fid_lenet"].max == 50.0 and cfg.gate.min_improvement == 0.05
    assert cfg.train.g_optimizer.betas == (0.0, 0.9)


def test_a_hash_in_a_folder_path_reaches_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    for folder, count in (("shots", 2), ("shots #2", 3)):  # the wrong folder has a different count
        (tmp_path / folder).mkdir()
        for i in range(count):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / folder / f"{i}.png")
    out = tmp_path / "prepared"
    source = f"folder:{tmp_path / 'shots #2'}"
    code = run_app(app, ["prepare", f"data.source={source}", "data.resolution=8", f"data.prepared_dir={out}", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert printed["source"] == source and printed["count"] == 3


def test_a_repeated_override_keeps_the_last_value_and_keys_are_trimmed() -> None:
    assert parse_overrides(["train.steps=5", " train.steps =7"]) == {"train.steps": 7}
    assert load_config(REPO / "params.yaml", ["train.steps=5", "train.steps=7"]).train.steps == 7


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("train.steps", "key=value"),
        ("=5", "key=value"),
        (" =5", "key=value"),
        ("train. steps=1", "without spaces"),
        ("train..steps=1", "empty parts"),
        (".steps=1", "empty parts"),
        ("train.=1", "empty parts"),
        ("eval.extractors=[lenet, inception #x]", "not valid YAML"),  # the comment ate the bracket
        ("registry.experiment='it's'", "not valid YAML"),
        ("registry.model_name=null", "valid string"),
        ("gate.thresholds.fid_lenet.max=nan", "NaN"),
        ("gate.thresholds.fid_lenet.min=200", "no value could pass"),  # max is 100 in params.yaml
        ("train.seed=-1", "greater than or equal to 0"),
        ("train.seed=18446744073709551616", "less than or equal to 4294967295"),  # torch.manual_seed overflows
        ("eval.batch_size=10000000000", "less than or equal to 65536"),
        ("data.prepared_dir=", "empty"),
        ("data.raw_dir= ", "empty"),
    ],
)
def test_bad_overrides_exit_2_with_one_line(override: str, shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_app(app, ["prepare", "--params", str(REPO / "params.yaml"), override])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error:") and shown in lines[0]


# ----------------------------------------------------------------------------- careless params files
def _laughs() -> str:
    """A YAML anchor bomb: 9 levels of 9 aliases, 9**9 strings when expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join([*lines, "train:", "  diffaugment: *i", "eval:", "  extractors: *i"]) + "\n"


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        (b"train:\n  steps: \xff\xfe\n", "byte 16 is not utf-8 text"),
        (b"train:\n  steps: 5\x07\n", "control character"),
        (b"- a\n- b\n", "expected a mapping of sections"),
        (b"just some text\n", "got a str"),
        (b"train:\n  steps: 5\n  steps: 6\n", "line 3: duplicate key 'steps'"),  # PyYAML would keep 6 silently
        (b"train: !!python/object/apply:os.system ['echo pwned']\n", "could not determine a constructor"),
        (b"train: [unclosed\n", "not valid YAML"),
        (b"train: 5\n", "train: Input should be a valid dictionary"),
        (_laughs().encode(), "and 14 more"),
    ],
)
def test_damaged_params_files_give_one_bounded_line(tmp_path: Path, content: bytes, shown: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(params)
    message = str(caught.value)
    assert shown in message and "\n" not in message
    assert len(message) < 1000  # the anchor bomb's value is quoted shortened, not expanded to 9**9 items


def test_empty_params_files_and_sections_mean_defaults(tmp_path: Path) -> None:
    for text in ("", "# all commented out\n", "train:\n# steps: 5\ndata:\n"):
        (tmp_path / "p.yaml").write_text(text)
        assert load_config(tmp_path / "p.yaml") == Config()
        assert load_config(tmp_path / "p.yaml", ["train.steps=3"]).train.steps == 3


def test_params_path_that_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["prepare", "--params", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "is a directory" in err and len(err.splitlines()) == 1
