"""The command lines read right: `--version`, `key=value` overrides only where they apply, plurals, no `vNone`, and a
failed gate that lists what failed. Through the real entry points (`ganops`, `python -m gan_core`) in-process, with
a real SQLite MLflow store where a registry is needed."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from importlib.metadata import version as dist_version
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from flows import registry
from flows.cli import _echo_result, app, show_progress
from gan_core import cli as gan_core_cli
from gan_core.cli import run_app
from gan_core.config import Config, load_config
from gan_core.tracking.runs import training_tags
from gan_core.tracking.store import configure, experiment_id

FLOW_COMMANDS = ["retrain", "demo", "monitor", "schedule", "sweep"]
REGISTRY_COMMANDS = ["models", "promote", "rollback", "ui", "generate"]
GAN_CORE_COMMANDS = ["prepare", "train", "classifier", "evaluate"]
# fid_lenet fails its bound; class_coverage passes; no champion: the champion check passes (nothing to beat).
BAD_FID = {"fid_lenet": 99.0, "class_coverage": 1.0}
CONTEXT = {"format": "ganops-eval-context/1", "task": "generation", "data_version": "synthetic.dir",
           "num_samples": 200, "seed": 1, "extractors": {}}
"""One evaluation context for the synthetic metrics: the gate compares them as recorded."""


def _help(target, command: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert run_app(target, [command, "--help"]) == 0
    return capsys.readouterr().out


# ----------------------------------------------------------------------------- --version
@pytest.mark.parametrize("target", [app, gan_core_cli.app], ids=["ganops", "python -m gan_core"])
def test_version_prints_the_distribution_version_and_exits_0(target, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(target, ["--version"]) == 0
    out = capsys.readouterr().out
    assert out == f"ganops {dist_version('ganops')}\n"
    assert re.fullmatch(r"ganops \d+\.\d+\.\d+\S*\n", out)  # a real version, not the "unknown" fallback


# ----------------------------------------------------------------------------- overrides where they apply
@pytest.mark.parametrize("command", FLOW_COMMANDS)
def test_flow_commands_advertise_overrides(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(app, command, capsys)
    assert "[KEY=VALUE]..." in text and "train.steps=200" in text


@pytest.mark.parametrize("command", GAN_CORE_COMMANDS)
def test_gan_core_stages_advertise_overrides(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(gan_core_cli.app, command, capsys)
    assert "[KEY=VALUE]..." in text and "train.steps=200" in text


@pytest.mark.parametrize("command", REGISTRY_COMMANDS)
def test_registry_commands_take_params_but_no_overrides(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(app, command, capsys)
    assert "--params" in text
    assert "KEY=VALUE" not in text.upper() and "overrides" not in text.lower() and "train.steps" not in text
    # Gone, not hidden: a stray key=value is a usage error naming it, before any store is looked for.
    argv = [command, "1", "registry.model_name=other"] if command == "promote" else [command, "registry.model_name=x"]
    assert run_app(app, argv) == 2
    assert "registry.model_name=" in capsys.readouterr().err


# ----------------------------------------------------------------------------- registry output
@pytest.fixture(scope="module")
def model_dir(generator_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pyfunc import save_pyfunc

    return save_pyfunc(generator_package, tmp_path_factory.mktemp("pyfunc") / "generator")


@pytest.fixture()
def params(mlflow_store, digits_prepared: Path, tmp_path: Path) -> Path:
    """A params file with the gate of GATE and the registry in the test's store; the CLI reads only this."""
    tree = {
        "data": {"source": "digits", "prepared_dir": str(digits_prepared)},
        "gate": {"thresholds": {"fid_lenet": {"max": 50.0}, "class_coverage": {"min": 0.8}},
                 "primary_metric": "fid_lenet", "min_improvement": 0.05},
        "registry": {"tracking_uri": mlflow_store.uri, "artifact_location": str(mlflow_store.artifacts)},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _candidate(cfg: Config, model: Path, metrics: dict[str, float]) -> str:
    """A real finished run holding the pyfunc generator, registered as a new version."""
    client: MlflowClient = configure(cfg.registry)
    run_id = client.create_run(experiment_id(cfg.registry, client)).info.run_id
    client.log_artifacts(run_id, str(model), "generator")
    client.set_terminated(run_id, "FINISHED")
    return registry.register_candidate(cfg, f"runs:/{run_id}/generator", run_id=run_id, metrics=metrics,
                                       tags=training_tags(cfg), context=CONTEXT)["version"]


def test_rejected_without_champion_reads_right(
    params: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(params)
    v1 = _candidate(cfg, model_dir, BAD_FID)

    assert run_app(app, ["models", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert f"{cfg.registry.model_name} (1 version)" in out and "1 versions" not in out

    assert run_app(app, ["promote", v1, "--params", str(params)]) == 3
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"rejected: v{v1} stays off @champion (no champion yet)"
    assert "vNone" not in out and "None" not in out
    # Only the failed check under the failed gate: the passing "no champion yet ... has nothing to beat" line would
    # read as if the candidate had won.
    assert lines[1:] == ["gate: failed (1 of 4 checks)", "  fid_lenet = 99 > max 50: fail", "  (3 other checks passed)"]


def test_passed_gate_lists_every_check_and_names_the_champion(
    params: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(params)
    v1 = _candidate(cfg, model_dir, {"fid_lenet": 40.0, "class_coverage": 1.0})
    v2 = _candidate(cfg, model_dir, {"fid_lenet": 39.0, "class_coverage": 1.0})  # 2.5% better: short of 5%
    assert run_app(app, ["promote", v1, "--params", str(params)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"promoted: v{v1} is now @champion"
    assert out[1] == "gate: passed (4 checks)"
    assert len(out) == 2 + 4 and all(line.endswith(": pass") for line in out[2:])

    assert run_app(app, ["promote", v2, "--params", str(params)]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"rejected: v{v2} stays off @champion (champion: v{v1})"
    assert out[1] == "gate: failed (1 of 4 checks)" and out[2].endswith(": fail")
    assert f"fid_lenet 39 is 2.5% better than champion v{v1}'s 40" in out[2] and "short of the 5%" in out[2]

    assert run_app(app, ["models", "--params", str(params)]) == 0
    assert f"{cfg.registry.model_name} (2 versions)" in capsys.readouterr().out


def test_a_recipe_names_its_own_registered_model_and_gate(
    params: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(params, ["recipe=conditional"])  # what `ganops retrain recipe=conditional` registers under
    version = _candidate(cfg, model_dir, {"fid_lenet": 40.0, "class_coverage": 1.0, "class_accuracy": 0.5})

    assert run_app(app, ["promote", version, "--params", str(params), "--recipe", "conditional"]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"rejected: v{version} stays off @champion (no champion yet)"
    assert "  class_accuracy = 0.5 < min 0.95: fail" in out  # the recipe's gate, beside the params file's
    assert run_app(app, ["models", "--params", str(params), "--recipe", "conditional"]) == 0
    assert "ganops-conditional (1 version)" in capsys.readouterr().out

    # `ganops generate --recipe` samples that product's champion. There is none: the one error line says why (the
    # only version was rejected, with the failed check) and what to do; nothing is written.
    grid = tmp_path / "grid.png"
    generate = ["generate", "--params", str(params), "--recipe", "conditional", "-n", "2", "--device", "cpu",
                "--out", str(grid)]
    assert run_app(app, generate) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: models:/ganops-conditional@champion: no version of 'ganops-conditional' is "
                          f"@champion: the only version, v{version}, was rejected by the gate (class_accuracy = 0.5 "
                          "< min 0.95: fail)")
    assert f"--model models:/ganops-conditional/{version}," in err and "Traceback" not in err
    assert f'`ganops promote {version} --force --reason "why" --params {params} --recipe conditional`' in err
    assert len(err.splitlines()) == 1 and not grid.exists()
    # Both ways out work: the version by number, or the forced promotion after which --recipe finds the champion.
    assert run_app(app, [*generate, "--model", f"models:/ganops-conditional/{version}"]) == 0 and grid.is_file()
    grid.unlink()
    assert run_app(app, ["promote", version, "--params", str(params), "--recipe", "conditional", "--force",
                         "--reason", "try it"]) == 0
    assert run_app(app, generate) == 0 and grid.is_file()
    assert "from models:/ganops-conditional@champion" in capsys.readouterr().out
    assert run_app(app, ["models", "--params", str(params)]) != 0  # the unconditional model was never touched
    assert "no registered model 'ganops-generator'" in capsys.readouterr().err


def test_retrain_result_shows_a_failed_gate_by_what_failed(
    params: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(params)
    v1 = _candidate(cfg, model_dir, BAD_FID)
    decision = registry.gate(cfg, v1)  # what the retrain flow puts in its result
    assert not decision["passed"]
    _echo_result({"status": "rejected", "version": v1, "gate": decision})
    assert capsys.readouterr().out.splitlines() == [
        f"status: rejected (version {v1})",
        "gate: failed (1 of 4 checks)",
        "  fid_lenet = 99 > max 50: fail",
        "  (3 other checks passed)",
    ]


def test_the_demos_next_lines_are_commands_that_run_where_make_demo_leaves_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` runs .venv/bin/ganops without activating the venv: `ganops ui` would not be found there."""
    from flows.cli import runnable

    bin_dir = Path(sys.executable).parent
    assert os.access(bin_dir / "ganops", os.X_OK)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv not activated
    monkeypatch.chdir(bin_dir.parent.parent)  # the project that holds .venv, as after `make demo`
    assert runnable("ganops") == os.path.join(bin_dir.parent.name, bin_dir.name, "ganops")  # .venv/bin/ganops
    monkeypatch.chdir(tmp_path)  # elsewhere: the full path
    assert runnable("ganops") == str(bin_dir / "ganops")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")  # activated: the plain name
    assert runnable("ganops") == "ganops"


def test_generate_says_1_image(generator_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "one.png"
    argv = ["generate", "--model", str(generator_package), "-n", "1", "--out", str(out), "--device", "cpu"]
    assert run_app(app, argv) == 0
    assert capsys.readouterr().out == f"wrote 1 image from {generator_package} to {out}\n"


# ----------------------------------------------------------------------------- training progress in flows
def test_flow_commands_let_training_progress_through() -> None:
    """Python's default level (WARNING) would drop the trainer's INFO progress lines in `ganops retrain`."""
    logger = logging.getLogger("gan_core")
    before = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        assert not logging.getLogger("gan_core.training.loop").isEnabledFor(logging.INFO)
        show_progress()
        assert logging.getLogger("gan_core.training.loop").isEnabledFor(logging.INFO)
    finally:
        logger.setLevel(before)


@pytest.mark.slow
def test_piped_ganops_retrain_shows_training_progress(retrain_workspace, tmp_path: Path) -> None:
    """What a user sees with `ganops retrain 2>&1 | cat` (or in CI): a progress line every train.log_every steps.
    A real process with pipes for stdout and stderr, so nothing is a terminal; its own Prefect home and store."""
    ws = retrain_workspace(tmp_path / "ws")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               DVC_NO_ANALYTICS="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "ganops"), "retrain"], cwd=ws.root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    # tiny_retrain_params: 20 steps, log_every 10.
    progress = [line.split(" - ", 1)[1] for line in proc.stdout.splitlines()
                if "| gan_core.training.loop - step " in line]
    assert [line.split()[1] for line in progress] == ["10/20", "20/20"], proc.stdout
    assert "ETA" in progress[0] and "done in" in progress[1]
    assert "status: promoted (version 1)" in proc.stdout
