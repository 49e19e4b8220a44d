"""Failures reach the user as one line and in bounded time (issue 9).

* User errors anywhere under `ganops` / `python -m gan_core`, inside Prefect flows and tasks included: one `error:`
  line on stderr, exit 2, no traceback in stdout or stderr (Prefect's own exception records are dropped).
  Unexpected errors: one summary line, then the traceback, exit 1.
* Unreachable services (an MLflow tracking server, the Prefect API, a DVC remote): one line naming the service and
  the step, well within GANOPS_SERVICE_TIMEOUT (120 s by default); MLflow's HTTP retries are the only retry layer.
* Read-only commands never create an MLflow store.

Closed ports come from a socket bound on 127.0.0.1 and closed again (processes.free_port): nothing listens there.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import yaml
from processes import free_port

# Imported at collection: importing Prefect configures logging (root handlers included), which must happen before
# a test's log capture starts, not in the middle of it.
from flows.dvc_pipeline import dvc_push
from flows.failures import RetrainFailed, is_transient, named_step
from flows.tasks import push_data
from gan_core.cli import run_app
from gan_core.errors import ServiceUnavailable, UserError
from gan_core.tracking.store import DEFAULT_SERVICE_TIMEOUT_S, MLFLOW_HTTP_RETRIES, mlflow_http_env, use_store

BIN = Path(sys.executable).parent
SERVICE_VARS = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "GANOPS_SERVICE_TIMEOUT", *mlflow_http_env(1))


# ----------------------------------------------------------------------------- helpers
def _clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any service setting a developer may have exported, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS and not k.startswith("PREFECT_CLIENT")}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1", **extra}


def _run(argv: list[str], cwd: Path, **env: str) -> tuple[int, str, str, float]:
    """Run an entry point in a subprocess: (exit status, stdout, stderr, seconds)."""
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def _one_error_line(out: str, err: str) -> str:
    """The single `error:` line of a user error; fails on a traceback anywhere or on several error lines."""
    assert "Traceback" not in out + err, out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def _tiny_params(root: Path) -> Path:
    """A params.yaml of the test suite's seconds-long retrain, every path under root (its store not created)."""
    from conftest import tiny_retrain_params

    root.mkdir(parents=True, exist_ok=True)
    params = root / "params.yaml"
    db = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    params.write_text(yaml.safe_dump(tiny_retrain_params(root, db), sort_keys=False))
    return params


@pytest.fixture
def restore_env() -> Iterator[None]:
    """configure() sets MLflow's HTTP variables in os.environ (as it must for MLflow to read them): undo that."""
    import mlflow

    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)
    mlflow.set_tracking_uri(None)


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, no params.yaml, no service variables: the code's defaults apply."""
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in SERVICE_VARS:
        monkeypatch.delenv(name, raising=False)
    return work


# ----------------------------------------------------------------------------- one line, exit 2, no traceback
def test_a_config_error_fails_before_the_flow_starts_on_one_line(tmp_path: Path) -> None:
    _tiny_params(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())

    rc, out, err, _ = _run([str(BIN / "ganops"), "retrain", "train.steps=-1"], cwd=tmp_path)

    assert rc == 2
    line = _one_error_line(out, err)
    assert "step 'config' failed" in line and "train.steps" in line and "no alias was moved" in line
    # Refused before Prefect's temporary API was started (its banner) and before anything was written.
    assert "Starting temporary server" not in out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == before

    # The DVC stages' entry point says it the same way.
    rc, out, err, _ = _run([sys.executable, "-m", "gan_core", "train", "train.steps=-1"], cwd=tmp_path)
    assert rc == 2 and "train.steps" in _one_error_line(out, err)


@pytest.mark.slow
def test_a_user_error_inside_a_flow_task_is_one_line_without_tracebacks(
    prefect_harness: None, retrain_workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    from flows.cli import app

    ws = retrain_workspace(tmp_path / "ws")
    monkeypatch.chdir(ws.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    missing = tmp_path / "no-such-folder"
    caplog.set_level(logging.INFO)

    # The data step's task raises UserError: Prefect fails the task run, then the flow run.
    rc = run_app(app, ["retrain", "--params", str(ws.params), f"data.source=folder:{missing}"])

    assert rc == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.out, captured.err)
    assert "step 'version_data' failed" in line and str(missing) in line
    # Prefect still records the failure (one-line state lines), never the traceback.
    assert "Traceback" not in caplog.text
    failed = [r for r in caplog.records if r.name.startswith("prefect") and "Finished in state Failed" in r.message]
    assert failed and all("\n" not in r.getMessage() for r in failed)


# A task and flows of our own on the session's Prefect harness: the log filter decides by the exception alone.
def _tiny_task_raising(error: Exception) -> None:
    raise error


def _flow_around(error: Exception) -> None:
    from prefect import flow, task

    @flow(name="failing")
    def failing() -> None:
        task(_tiny_task_raising, name="step")(error)

    failing(return_state=True)


@pytest.mark.parametrize(
    ("error", "traceback_logged"),
    [(UserError("params.yaml: train.steps: expected >= 1"), False), (RuntimeError("a bug"), True)],
    ids=["user-error", "internal-error"],
)
def test_prefect_logs_user_errors_without_traceback_and_bugs_with_one(
    prefect_harness: None, caplog: pytest.LogCaptureFixture, error: Exception, traceback_logged: bool
) -> None:
    caplog.set_level(logging.INFO)
    _flow_around(error)
    assert ("Traceback" in caplog.text) is traceback_logged
    assert str(error) in caplog.text  # the failure itself is never hidden


def test_entry_points_print_one_line_for_wrapped_user_errors_and_a_traceback_for_bugs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = typer.Typer()

    @app.command()
    def fail(kind: str) -> None:
        if kind == "user":
            raise RetrainFailed("evaluate", UserError("accuracy 0.5 < eval.classifier.min_accuracy=1.0"))
        if kind == "service":
            raise ServiceUnavailable("MLflow tracking server", "http://127.0.0.1:9", "models", "connection refused",
                                     "start it or set MLFLOW_TRACKING_URI")
        raise RetrainFailed("train", ZeroDivisionError("division by zero"))

    @app.command()
    def other() -> None:  # a second command keeps `fail` a subcommand, as in ganops
        pass

    assert run_app(app, ["fail", "user"]) == 2
    captured = capsys.readouterr()
    assert _one_error_line(captured.out, captured.err) == (
        "error: step 'evaluate' failed: accuracy 0.5 < eval.classifier.min_accuracy=1.0"
    )
    assert run_app(app, ["fail", "service"]) == 2
    captured = capsys.readouterr()
    assert "MLflow tracking server http://127.0.0.1:9 unreachable (step 'models')" in _one_error_line(
        captured.out, captured.err
    )
    assert run_app(app, ["fail", "bug"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: RetrainFailed: step 'train' failed: ZeroDivisionError: division by zero")
    assert "Traceback (most recent call last):" in err[1:] and err[-1] == (
        "flows.failures.RetrainFailed: step 'train' failed: ZeroDivisionError: division by zero"
    )


# ----------------------------------------------------------------------------- unreachable services
@pytest.mark.parametrize("command", [["retrain"], ["models"]], ids=["retrain", "models"])
def test_an_unreachable_mlflow_server_fails_fast_on_one_line(tmp_path: Path, command: list[str]) -> None:
    _tiny_params(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"

    rc, out, err, elapsed = _run([str(BIN / "ganops"), *command], cwd=tmp_path, MLFLOW_TRACKING_URI=uri)

    assert rc == 2
    line = _one_error_line(out, err)
    step = "config" if command == ["retrain"] else "models"
    assert f"MLflow tracking server {uri} unreachable (step '{step}'): connection refused" in line
    assert "MLFLOW_TRACKING_URI" in line
    # The documented bound; a refused probe answers at once, so this takes seconds (process start-up included).
    assert elapsed < DEFAULT_SERVICE_TIMEOUT_S


@pytest.mark.slow
def test_the_retrain_flow_itself_probes_the_tracking_server_first(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_env: None
) -> None:
    """Started without the CLI (a served deployment, the Python API), the flow's config step does the probing."""
    from flows.retrain import retrain

    params = _tiny_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()

    state = retrain(params=str(params), return_state=True)

    assert state.is_failed()
    with pytest.raises(RetrainFailed) as failure:
        state.result()
    assert failure.value.step == "config" and isinstance(failure.value.cause, ServiceUnavailable)
    assert f"MLflow tracking server {uri} unreachable (step 'config')" in str(failure.value)
    assert time.monotonic() - start < DEFAULT_SERVICE_TIMEOUT_S
    assert not (tmp_path / "data").exists()  # nothing was prepared before the check


def test_mlflow_requests_are_bounded_and_retried_when_the_server_is_gone(
    tmp_path: Path, restore_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No probe here: a server that goes away between two calls. MLflow's own HTTP retries, which ganops bounds
    (by default MLflow retries one request 7 times over ~4 minutes), end within budget/8 per attempt and
    the step's error becomes the outage's one line."""
    from flows import registry
    from gan_core.config import load_config

    for name in SERVICE_VARS:
        monkeypatch.delenv(name, raising=False)
    uri = f"http://127.0.0.1:{free_port()}"
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    cfg = load_config(empty, {"registry.tracking_uri": uri})
    use_store(uri)  # as the flow's config step does
    start = time.monotonic()
    with pytest.raises(RetrainFailed) as failure, named_step("find_unchanged"):
        registry.latest_version(cfg)
    elapsed = time.monotonic() - start

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(MLFLOW_HTTP_RETRIES)
    assert isinstance(failure.value.cause, ServiceUnavailable)
    assert f"{uri} unreachable (step 'find_unchanged'): connection refused" in str(failure.value)
    # Refused connections: 6 attempts, 0, 2, 4, 8 and 16 s apart (+ <= 1 s jitter each): 30-35 s, which rides
    # through a server restart (tests/test_scale.py); a silent server adds at most budget/9 per attempt.
    assert 30 <= elapsed < 6 * (DEFAULT_SERVICE_TIMEOUT_S // 9) + 35

    # A user's own MLflow setting is kept.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from gan_core.tracking.store import configure

    configure(cfg.registry)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"


def test_an_unreachable_prefect_api_fails_fast_on_one_line(tmp_path: Path) -> None:
    _tiny_params(tmp_path)
    api = f"http://127.0.0.1:{free_port()}/api"

    rc, out, err, elapsed = _run([str(BIN / "ganops"), "retrain"], cwd=tmp_path, PREFECT_API_URL=api)

    assert rc == 2
    line = _one_error_line(out, err)
    assert f"Prefect API PREFECT_API_URL={api} unreachable (step 'config'): connection refused" in line
    assert elapsed < DEFAULT_SERVICE_TIMEOUT_S


@pytest.mark.slow
def test_an_unreachable_dvc_remote_fails_fast_on_one_line_without_prefect_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.states import Failed


    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "a.txt").write_text("a\n")
    port = free_port()
    dvc = str(BIN / "dvc")
    for args in (["init", "--no-scm", "-q"], ["add", "-q", "data"],
                 ["remote", "add", "-d", "web", f"http://127.0.0.1:{port}/store"]):
        subprocess.run([dvc, *args], cwd=project, check=True, capture_output=True, env=_clean_env())
    monkeypatch.chdir(project)
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable) as failure:
        dvc_push("data.dvc")
    elapsed = time.monotonic() - start

    message = str(failure.value)
    assert f"DVC remote 'web' (http://127.0.0.1:{port}/store) unreachable (step 'push_data')" in message
    assert "connection refused" in message and "\n" not in message
    assert elapsed < DEFAULT_SERVICE_TIMEOUT_S
    # DVC's HTTP client retries transfers itself: Prefect adds no second layer, and would not retry an outage.
    assert push_data.retries == 0
    assert not is_transient(push_data, None, Failed(data=failure.value))


# ----------------------------------------------------------------------------- read-only commands create nothing
@pytest.mark.parametrize(
    "argv",
    [["models"], ["promote", "1"], ["rollback"], ["ui"], ["generate"],
     ["generate", "--model", "models:/ganops-generator/1"]],
    ids=["models", "promote", "rollback", "ui", "generate-champion", "generate-version"],
)
def test_read_only_commands_create_no_store(empty_dir: Path, argv: list[str], capsys: pytest.CaptureFixture) -> None:
    from flows.cli import app

    assert run_app(app, argv) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.out, captured.err)
    assert f"no MLflow store at {empty_dir / 'mlflow.db'}" in line and "ganops demo" in line
    assert list(empty_dir.iterdir()) == []


def test_promotion_typos_are_named_before_the_store_is_looked_for(
    empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import app

    assert run_app(app, ["promote", "latest"]) == 2
    assert "'latest' is not a version number" in _one_error_line(*capsys.readouterr())
    assert run_app(app, ["promote", "2", "--force"]) == 2
    assert "--force needs --reason" in _one_error_line(*capsys.readouterr())
    assert list(empty_dir.iterdir()) == []


def test_generate_from_a_package_directory_never_touches_mlflow(
    empty_dir: Path, generator_package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import app

    assert run_app(app, ["generate", "--model", str(generator_package), "-n", "4", "--out", "grid.png"]) == 0
    assert sorted(p.name for p in empty_dir.iterdir()) == ["grid.png"]


# ----------------------------------------------------------------------------- careless users
@pytest.fixture(scope="module")
def pyfunc_model(generator_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pyfunc import save_pyfunc

    return save_pyfunc(generator_package, tmp_path_factory.mktemp("pyfunc") / "generator")


@pytest.fixture
def store_with_champion(mlflow_store, pyfunc_model: Path, tmp_path: Path) -> Path:
    """A store whose model has one version, the champion, that replaced nothing; returns a params file for it."""
    from flows import registry
    from gan_core.config import load_config
    from gan_core.tracking.store import configure, experiment_id

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"registry": {"tracking_uri": mlflow_store.uri,
                                                   "artifact_location": str(mlflow_store.artifacts)}}))
    cfg = load_config(params)
    model = pyfunc_model
    client = configure(cfg.registry)
    run_id = client.create_run(experiment_id(cfg.registry, client)).info.run_id
    client.log_artifacts(run_id, str(model), "generator")
    client.set_terminated(run_id, "FINISHED")
    version = registry.register_candidate(cfg, f"runs:/{run_id}/generator", run_id=run_id,
                                          metrics={"fid_lenet": 10.0, "class_coverage": 1.0},
                                          tags={"data_source": "digits"})["version"]
    assert registry.promote(cfg, version, force=True, reason="test setup")["promoted"]
    return params


CARELESS = [
    (["promote", "999"], {}, "has no version 999"),
    (["promote", "abc"], {}, "'abc' is not a version number"),
    (["promote", "1", "--force"], {}, "--force needs --reason"),
    (["rollback"], {}, "replaced no earlier champion; nothing to roll back to"),
    (["ui", "--port", "99999"], {}, "--port 99999: expected a TCP port in [1, 65535]"),
    (["schedule", "--cron", "every night"], {}, "'every night' is not a cron expression"),
    (["models"], {"MLFLOW_TRACKING_URI": "foo://x"}, "MLFLOW_TRACKING_URI='foo://x': not a tracking URI MLflow"),
    (["models"], {"MLFLOW_TRACKING_URI": "file:./mlruns"}, "plain-file store"),
    (["models"], {"GANOPS_SERVICE_TIMEOUT": "soon"}, "GANOPS_SERVICE_TIMEOUT='soon': expected a number of seconds"),
    (["ui"], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}, "serves its own UI"),
]


@pytest.mark.parametrize(("argv", "env", "message"), CARELESS, ids=[" ".join(c[0]) + str(c[1]) for c in CARELESS])
def test_careless_registry_commands_get_one_line(
    store_with_champion: Path, argv: list[str], env: dict[str, str], message: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import app

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    params = [] if argv[0] == "schedule" else ["--params", str(store_with_champion)]
    assert run_app(app, [*argv, *params]) == 2
    captured = capsys.readouterr()
    assert message in _one_error_line(captured.out, captured.err)


def test_missing_params_and_unusable_store_paths_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert run_app(app, ["models", "--params", "nope.yaml"]) == 2
    assert "params file 'nope.yaml' does not exist" in _one_error_line(*capsys.readouterr())
    assert run_app(app, ["retrain", "--params", "nope.yaml"]) == 2
    assert "step 'config' failed: params file 'nope.yaml'" in _one_error_line(*capsys.readouterr())

    # A store path below a file: reads say there is no store; a retrain refuses before it starts, creating nothing.
    (tmp_path / "a-file").write_text("")
    params = _tiny_params(tmp_path / "ws")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a-file/sub/mlflow.db")
    assert run_app(app, ["models"]) == 2
    assert f"no MLflow store at {tmp_path}/a-file/sub/mlflow.db" in _one_error_line(*capsys.readouterr())
    assert run_app(app, ["retrain", "--params", str(params)]) == 2
    line = _one_error_line(*capsys.readouterr())
    assert "step 'config' failed" in line and "a-file/sub" in line and "not writable" in line
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["params.yaml"]
