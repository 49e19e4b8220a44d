"""The retrain flow: version the data, train, evaluate, register, gate and promote — one Prefect flow.

    ganops retrain                                  # params.yaml
    ganops retrain train.steps=200 model.arch=mlp   # dotted overrides, as in `dvc exp run -S`
    ganops demo                                     # the same flow on the defaults, then how to use the champion

    from flows.retrain import retrain
    result = retrain(params="params.yaml", overrides=["train.steps=200"])
    result["status"]     # "promoted" | "rejected" | "skipped"

Each task calls the same function as the CLI (`python -m gan_core ...`) and the DVC stages:
gan_core.data.prepare, gan_core.classifier.train_classifier, gan_core.train.train, gan_core.evaluate.evaluate,
and flows.registry's register / gate / promote.

Data versioning. When the run is exactly the DVC `prepare` stage (the repo's params.yaml, no `data.*` overrides,
data.prepared_dir = the stage's output) the data step runs `dvc repro prepare`, so dvc.lock and the DVC cache
record the dataset (and `dvc push` sends it to the default remote when one is configured). Otherwise — a temp
directory, overrides, another params file — it calls gan_core.data.prepare directly. Either way the data version
is gan_core.lineage.data_version: the md5 DVC records for the directory, so both paths name the same data alike.
When the run is the whole DVC pipeline (params.yaml, no overrides), the flow runs the classifier/train/evaluate
steps itself (training must log into its MLflow run) and then `dvc commit`s those stages, so dvc.lock records
what it produced and `dvc status` reports nothing changed.

Skipping. A training is identified by (data version, hash of the data/model/train/eval sections, hash of
gan_core's source — so uncommitted code edits count, and commits that touch no code do not).
When the newest registered candidate carries the same three, nothing is trained: the flow says so and reports
that version. gate and registry settings are policy, not inputs of the candidate, so they are left out.

Failures. Every step runs under `named_step(name)`: an exception becomes RetrainFailed("<step>: <cause>"), a failure
report is published, and since promotion is the last step and a single alias move, no alias moves on failure.
A user error (gan_core.errors.UserError, a service outage included) appears in Prefect's log as one-line state
lines, without a traceback (UserErrorsOnOneLine); an unexpected error keeps its traceback.

Names and links. A flow run is named after what it trains (`retrain-dcgan-nonsaturating-2000steps`); its MLflow
run carries `prefect.flow_run_id`, `prefect.flow_run_name` and, when a Prefect UI is known (PREFECT_UI_URL, set
or derived from PREFECT_API_URL), `prefect.flow_run_url`. The report links back to the MLflow run (flows.report).

Services. The tracking server is probed in the `config` step, so a dead one fails in seconds, naming the step. One
retry layer per service: MLflow's own HTTP retries for a tracking server (bounded by GANOPS_SERVICE_TIMEOUT, see
gan_core.tracking.mlflow_http_env), Prefect task retries only for a local or database store, DVC's own clients
for a remote (`dvc push` bounded by GANOPS_SERVICE_TIMEOUT). A step whose MLflow call failed while the server no
longer answers the probe is reported as that outage.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from gan_core.config import DEFAULT_PARAMS, Config, load_config, parse_overrides
from gan_core.errors import ServiceUnavailable, UserError, find_user_error, first_line
from gan_core.tracking import (
    CODE_HASH_TAG,
    TRAINING_HASH_TAG,
    check_tracking,
    check_tracking_server,
    connection_problem,
    is_http_uri,
    service_timeout_s,
    training_key,
)

PREPARE_STAGE = "prepare"


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a second try may fix, and only where no lower layer retried already: not a UserError (a
    service outage included), not an MLflow error from a tracking server (MLflow's HTTP client retried it),
    not MLflow's 4xx answers (missing, invalid)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    error = state.data
    if find_user_error(error) is not None:
        return False
    if isinstance(error, MlflowException):
        if is_http_uri(mlflow.get_tracking_uri()):
            return False
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    return True


# Steps that talk to the MLflow store retry with exponential backoff: 2 s, 4 s, 8 s. Against a tracking server
# is_transient declines (MLflow's HTTP retries are the one layer there), so only a local SQLite store (a lock
# held by another process) or a database store is retried here.
SERVICE_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": is_transient,
}


class RetrainFailed(RuntimeError):
    """A step of the retrain flow failed; the message is `step '<step>' failed: <cause>` on one line.

    A user error's own message is the cause (it is written for the user); other errors get their type name."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        what = first_line(cause) if isinstance(cause, UserError) else f"{type(cause).__name__}: {first_line(cause)}"
        super().__init__(f"step {step!r} failed: {what}")


class UserErrorsOnOneLine(logging.Filter):
    """Prefect logs a failed task or flow run's exception with its traceback ("Task run failed with exception",
    "Encountered exception during execution"), then the run's final state on one line. For a user error, or a
    RetrainFailed caused by one, that state line and the flow's own `step ... failed` line say it all: the
    exception record is dropped. Unexpected errors keep theirs, traceback included."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and find_user_error(record.exc_info[1]) is not None)


PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def quiet_user_errors() -> None:
    """Install UserErrorsOnOneLine on the loggers Prefect's engines log run failures to (once per process)."""
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorsOnOneLine) for f in logger.filters):
            logger.addFilter(UserErrorsOnOneLine())


# At import: every process that runs these flows imports this module first (CLI, tests, a served deployment).
quiet_user_errors()


# ----------------------------------------------------------------------------- data
def dvc_stage_applies(cfg: Config, params: str | Path, overrides: Mapping[str, Any]) -> bool:
    """True when `dvc repro prepare` would build exactly cfg.data: same params file, no data overrides, same output."""
    dvc_yaml = Path("dvc.yaml")
    if not (dvc_yaml.is_file() and Path(".dvc").is_dir()):
        return False
    if Path(params).resolve() != DEFAULT_PARAMS.resolve() or any(k.startswith("data.") for k in overrides):
        return False
    stage = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).get(PREPARE_STAGE) or {}
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
    return any(Path(o).resolve() == Path(cfg.data.prepared_dir).resolve() for o in outs)


# The stages the flow runs itself (inside an MLflow run) rather than through `dvc repro`, and the config
# directory each one's outputs must lie in for `dvc commit` to record what the flow produced.
FLOW_STAGES = {
    "classifier": lambda cfg: cfg.eval.classifier.out_dir,
    "train": lambda cfg: cfg.train.out_dir,
    "evaluate": lambda cfg: cfg.eval.out_dir,
}


def dvc_pipeline_applies(cfg: Config, params: str | Path, overrides: Mapping[str, Any]) -> bool:
    """True when the whole run is the repo's DVC pipeline: the prepare stage applies, there are no overrides, and
    every output of the classifier/train/evaluate stages lies where cfg makes the flow write it."""
    if overrides or not dvc_stage_applies(cfg, params, overrides):
        return False
    stages = (yaml.safe_load(Path("dvc.yaml").read_text()) or {}).get("stages", {})
    for name, out_dir in FLOW_STAGES.items():
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in (stages.get(name) or {}).get("outs", [])]
        root = Path(out_dir(cfg)).resolve()
        if not outs or not all(Path(o).resolve().is_relative_to(root) for o in outs):
            return False
    return True


class DvcFailed(RuntimeError):
    """A `dvc` command exited non-zero; `reason` is its first ERROR line."""

    def __init__(self, args: tuple[str, ...], returncode: int, reason: str) -> None:
        self.reason = reason
        super().__init__(f"`dvc {' '.join(args)}` exited with {returncode}: {reason}")


def _dvc(*args: str, timeout: float = 3600) -> str:
    """Run the DVC that lives beside this Python (stages call `python`, so our venv goes first on PATH)."""
    bindir = Path(sys.executable).parent
    exe = bindir / "dvc" if (bindir / "dvc").exists() else shutil.which("dvc")
    if exe is None:
        raise RuntimeError("dvc is not installed in this environment; pip install dvc")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        # A stage that is one of our entry points (`python -m gan_core prepare`) printed a user error: pass it on.
        ours = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("error: ")]
        if ours:
            raise UserError(f"`dvc {' '.join(args)}`: {ours[0].removeprefix('error: ')}")
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        # DVC's first ERROR line says what failed (a transfer and why); the last one only counts the failures.
        errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
        raise DvcFailed(args, proc.returncode, (errors or lines[-1:] or [""])[0])
    return proc.stdout


def dvc_push(*targets: str, step: str = "push_data") -> None:
    """`dvc push` to the default remote within GANOPS_SERVICE_TIMEOUT; a remote that refuses, fails or stays silent
    is one ServiceUnavailable line naming it. DVC's own clients retry transfers: no retry on top."""
    budget = service_timeout_s()
    try:
        _dvc("push", *targets, timeout=budget)
        return
    except subprocess.TimeoutExpired:
        reason, state = f"`dvc push` did not finish within {budget:g} s", "unreachable"
    except DvcFailed as e:
        reason = connection_problem(e.reason)
        state = "unreachable" if reason in ("connection refused", "host name not found") else "failed"
    raise ServiceUnavailable(
        "DVC remote", _default_remote_label(), step, reason,
        "check it (`dvc remote list`, `dvc push`), or raise GANOPS_SERVICE_TIMEOUT for a large upload", state=state,
    )


def _default_remote_label() -> str:
    """`'name' (url)` of the default DVC remote, as far as DVC's config tells."""
    try:
        name = _dvc("remote", "default", timeout=60).strip()
        remotes = [line.split() for line in _dvc("remote", "list", timeout=60).splitlines()]
    except (DvcFailed, subprocess.TimeoutExpired):
        return "(default)"
    # `dvc remote list` prints "<name> <url> [(default)]" per remote.
    url = next((parts[1] for parts in remotes if len(parts) > 1 and parts[0] == name), "?")
    return f"{name!r} ({url})"


@task(name="version_data")
def version_data(cfg: Config, use_dvc: bool) -> dict[str, Any]:
    """Prepare the dataset (via `dvc repro prepare` when it is the DVC stage) and return its data version."""
    from gan_core.data import load_prepared, prepare
    from gan_core.lineage import data_version_info

    if use_dvc:
        _dvc("repro", PREPARE_STAGE)
        meta = load_prepared(cfg.data.prepared_dir).meta
    else:
        meta = prepare(cfg.data)
    info = data_version_info(cfg.data.prepared_dir)
    return {**info, "data_source": cfg.data.source, "count": meta.get("count"), "shape": meta.get("shape")}


@task(name="push_data")
def push_data() -> bool:
    """`dvc push` the prepared dataset to the default DVC remote (bounded; DVC retries transfers itself)."""
    dvc_push(PREPARE_STAGE)
    return True


@task(name="record_dvc_stages")
def record_dvc_stages() -> None:
    """`dvc commit` the stages this flow ran itself, so dvc.lock records their outputs and `dvc status` is clean."""
    _dvc("commit", "--force", *FLOW_STAGES)


def _has_default_remote() -> bool:
    try:
        return bool(_dvc("remote", "default", timeout=60).strip())
    except DvcFailed:  # `dvc remote default` exits non-zero when none is set
        return False


# ----------------------------------------------------------------------------- skip check
@task(name="find_unchanged", **SERVICE_RETRIES)
def find_unchanged(cfg: Config, key: dict[str, str]) -> dict[str, Any] | None:
    """The newest registered candidate when it was trained from the same key and gated, else None."""
    from flows import registry

    latest = registry.latest_version(cfg)
    if latest is None:
        return None
    tags = latest["tags"]
    # A version registered by a run that crashed before its gate is not a finished candidate: train again.
    if "gate.decision" not in tags or any(tags.get(k) != v for k, v in key.items()):
        return None
    return latest


def current_champion(cfg: Config) -> dict[str, Any] | None:
    """The version holding the champion alias (version, metrics, tags), or None."""
    from flows import registry

    for version in registry.list_versions(cfg, missing_ok=True):
        if cfg.registry.champion_alias in version["aliases"]:
            return version
    return None


# ----------------------------------------------------------------------------- train + evaluate
@task(name="train_classifier")
def train_classifier(cfg: Config) -> dict[str, Any]:
    """Train the domain classifier (the offline feature extractor), or reuse it: gan_core.classifier keys its
    model by the data's content hash and its settings, so this costs seconds when the data is unchanged."""
    from gan_core.classifier import train_classifier as fit_classifier

    return json.loads(json.dumps(fit_classifier(cfg), default=str))


@task(name="train", retries=1, retry_delay_seconds=5, retry_condition_fn=is_transient)
def train_generator(cfg: Config, run_id: str) -> dict[str, Any]:
    """Train the GAN, logging to the MLflow run; a retry resumes from the last checkpoint of this attempt."""
    from gan_core.tracking import MLflowCallback, configure
    from gan_core.train import train

    resume = (task_run.get_run_count() or 1) > 1
    # An explicit client: the callback must not depend on which store MLflow's process-wide URI points at.
    result = train(cfg, resume=resume, callbacks=[MLflowCallback(run_id, configure(cfg.registry))])
    return json.loads(json.dumps(result, default=str))


@task(name="evaluate")
def evaluate_generator(cfg: Config) -> dict[str, Any]:
    """Evaluate the freshly trained generator package against the prepared data."""
    from gan_core.evaluate import evaluate

    return json.loads(json.dumps(evaluate(cfg), default=str))


@task(name="log_candidate", **SERVICE_RETRIES)
def log_candidate(cfg: Config, run_id: str, metrics: dict[str, Any], package_dir: str) -> str:
    """Log evaluation metrics, the metrics JSON, the sample grid and the pyfunc model; return the model URI."""
    from gan_core.tracking import configure
    from gan_core.tracking import log_candidate as log_to_run

    return log_to_run(cfg, run_id, metrics, package_dir, configure(cfg.registry))


# ----------------------------------------------------------------------------- registry
@task(name="register", **SERVICE_RETRIES)
def register(cfg: Config, model_uri: str, run_id: str, metrics: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    """Register the candidate as a new model version carrying lineage tags and metrics."""
    from flows import registry

    return registry.register_candidate(cfg, model_uri=model_uri, run_id=run_id, metrics=metrics, tags=tags)


@task(name="gate", **SERVICE_RETRIES)
def gate(cfg: Config, version: str) -> dict[str, Any]:
    """Apply the gate policy (thresholds + beat the champion) to a version; returns the decision and reasons."""
    from flows import registry

    return registry.gate(cfg, version)


@task(name="promote", **SERVICE_RETRIES)
def promote(cfg: Config, version: str) -> dict[str, Any]:
    """Move the champion alias to the version (one alias update: nothing is half-promoted)."""
    from flows import registry

    return registry.promote(cfg, version)


# ----------------------------------------------------------------------------- the flow
@contextmanager
def named_step(name: str) -> Iterator[None]:
    """Name the step an exception came from: any exception inside becomes RetrainFailed(name, cause); an MLflow
    error while the tracking server no longer answers becomes that outage (one line, not the client's chain)."""
    try:
        yield
    except RetrainFailed:
        raise
    except Exception as e:
        raise RetrainFailed(name, tracking_outage(name, e) or e) from e


def tracking_outage(step: str, error: Exception) -> ServiceUnavailable | None:
    """ServiceUnavailable when `error` came from MLflow and its tracking server does not answer a probe now."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = mlflow.get_tracking_uri()
    if not (isinstance(error, MlflowException) and is_http_uri(uri)):
        return None
    try:
        check_tracking_server(uri, step)
    except ServiceUnavailable as outage:
        return outage
    return None


def as_overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    return parse_overrides(overrides) if overrides else {}


def flow_run_config() -> Config | None:
    """The config of the current flow run, from its `params`/`overrides` parameters; None when it does not load
    (the flow's own config step then reports why)."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters or {}
    try:
        return load_config(parameters.get("params", str(DEFAULT_PARAMS)), as_overrides(parameters.get("overrides")))
    except Exception:  # a bad params file or override: named by the flow's config step, not here
        return None


def retrain_run_name() -> str:
    """Prefect flow-run name that says what runs, e.g. `retrain-dcgan-nonsaturating-2000steps` (`retrain` when the
    config does not load)."""
    from gan_core.tracking import training_label

    cfg = flow_run_config()
    return f"retrain-{training_label(cfg)}" if cfg else "retrain"


def prefect_run_tags() -> dict[str, str]:
    """MLflow run tags linking back to the Prefect flow run: its id and name, and its UI URL when a Prefect UI is
    known (PREFECT_UI_URL; the ephemeral API has no UI to link to)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    run_id = flow_run.id
    if run_id is None:
        return {}
    tags = {"prefect.flow_run_id": str(run_id), "prefect.flow_run_name": str(flow_run.name)}
    if PREFECT_UI_URL.value():
        tags["prefect.flow_run_url"] = str(flow_run.ui_url)
    return tags


@flow(name="retrain", flow_run_name=retrain_run_name, validate_parameters=False)
def retrain(
    params: str = str(DEFAULT_PARAMS), overrides: dict[str, Any] | list[str] | None = None
) -> dict[str, Any]:
    """Data → classifier → train → evaluate → register → gate → promote; skips training when nothing changed.

    Returns {"status": "promoted" | "rejected" | "skipped", "version", "data_version", "metrics", "gate", ...}.
    Raises RetrainFailed naming the step that failed.
    """
    from flows.report import publish_failure, publish_report

    logger = get_run_logger()
    result: dict[str, Any] = {"params": str(params)}
    cfg: Config | None = None
    try:
        with named_step("config"):
            parsed = as_overrides(overrides)
            cfg = load_config(params, parsed)
            check_tracking(cfg.registry, "config", write=True)
        result["model_name"] = cfg.registry.model_name
        with named_step("version_data"):
            use_dvc = dvc_stage_applies(cfg, params, parsed)
            data = version_data(cfg, use_dvc)
        if use_dvc and _has_default_remote():
            with named_step("push_data"):
                push_data()
        result.update(data_version=data["data_version"], data=data)
        logger.info("data version %s (%s images from %s)", data["data_version"], data["count"], cfg.data.source)

        with named_step("find_unchanged"):
            key = training_key(cfg, data["data_version"])
            previous = find_unchanged(cfg, key)
        if previous is not None:
            logger.info(
                "skipping training: version %s of %s was trained from the same data, config and code (%s)",
                previous["version"], cfg.registry.model_name, ", ".join(f"{k}={v}" for k, v in key.items()),
            )
            outcome = previous["tags"]["gate.decision"]
            # Gate settings are not part of the key: after changing them, `ganops promote` re-applies the gate.
            hint = ""
            if outcome == "failed":
                hint = f"; `ganops promote {previous['version']}` re-applies the current gate"
            result.update(
                status="skipped",
                version=previous["version"],
                run_id=previous.get("run_id"),
                metrics=previous.get("metrics", {}),
                reason=f"data, config and code unchanged since version {previous['version']} (gate {outcome}){hint}",
            )
            _publish(publish_report, cfg, result)
            return result

        with named_step("train_classifier"):
            classifier = train_classifier(cfg)
        result["classifier_accuracy"] = classifier.get("holdout_accuracy")

        from gan_core.tracking import start_training_run

        run_tags = {TRAINING_HASH_TAG: key[TRAINING_HASH_TAG], CODE_HASH_TAG: key[CODE_HASH_TAG],
                    **prefect_run_tags()}
        with named_step("train"), start_training_run(cfg, extra_tags=run_tags) as run:
            run_id = run.info.run_id
            result["run_id"] = run_id
            result["run_name"] = run.info.run_name
            result["experiment_id"] = run.info.experiment_id
            trained = train_generator(cfg, run_id)
            with named_step("evaluate"):
                metrics = evaluate_generator(cfg)
            result["metrics"] = metrics
            with named_step("log_candidate"):
                model_uri = log_candidate(cfg, run_id, metrics, str(trained["package_dir"]))
        if use_dvc and dvc_pipeline_applies(cfg, params, parsed):
            with named_step("record_dvc_stages"):
                record_dvc_stages()
        with named_step("register"):
            from gan_core.tracking import training_tags

            tags = {**training_tags(cfg), **key}
            version = register(cfg, model_uri, run_id, metrics, tags)
        result["version"] = version["version"]
        with named_step("gate"):
            champion_before = current_champion(cfg)
            decision = gate(cfg, version["version"])
        result["gate"] = {**decision, "champion_metrics": (champion_before or {}).get("metrics", {})}
        promoted = False
        if decision["passed"]:
            with named_step("promote"):
                # promote() re-checks against the champion under the promotion lock; a faster rival may win.
                outcome = promote(cfg, version["version"])
            promoted = outcome["promoted"]
            if not promoted:
                result["gate"]["reasons"] = outcome["reasons"]
        result["status"] = "promoted" if promoted else "rejected"
        if promoted:
            logger.info("version %s promoted to @%s", version["version"], cfg.registry.champion_alias)
        else:
            logger.info("version %s rejected: %s", version["version"], "; ".join(result["gate"]["reasons"]))
        _publish(publish_report, cfg, result)
        return result
    except RetrainFailed as failure:
        logger.error("retrain %s", failure)
        _publish(publish_failure, cfg, result, failure)
        raise


def _publish(publisher: Any, *args: Any) -> None:
    """Artifacts explain a run; failing to write them must not turn a finished promotion into a failed run."""
    try:
        publisher(*args)
    except Exception as e:  # the Prefect API is unreachable, the registry listing failed, ...
        get_run_logger().warning("could not publish the run report: %s: %s", type(e).__name__, e)


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2, default=str))
