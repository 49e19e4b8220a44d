"""The MLflow registry side of promotion: register candidates, apply the gate (the pure policy is flows.gate) and
record its decision, move the champion alias under a lock, roll back. (Every alias move, its lock and the tags and
descriptions that explain it live together, so no path moves an alias without them.)

    v = register_candidate(cfg, model_uri, run_id=run_id, metrics=metrics, tags=training_tags(cfg))["version"]
    decision = gate(cfg, v)        # thresholds + beat the champion; tags the version; passing → @challenger
    promote(cfg, v)                # under the promotion lock: re-check against the current champion, move @champion
    promote(cfg, v, force=True, reason="hotfix: ...")   # skips the gate, records why
    rollback(cfg)                  # @champion back to the version it replaced

A version's tags tell what produced it and why it was or was not promoted:
    data_version, data_source, git_commit, git_dirty, config_hash, device, torch_version, run_id   lineage
    metric.<name> = value, metric.<name>.extractor = lenet | inception                              evaluation
    eval.context (canonical JSON), eval.context_hash, eval.data_version, eval.num_samples, eval.seed,
    eval.extractors: the evaluation context the metrics hold in (gan_core.evaluation.context)              evaluation
    gate.decision = passed | failed, gate.reasons = one line per threshold / comparison             the gate
    promotion.decision = promoted | forced | rejected, promotion.reasons, promotion.previous_champion,
    promotion.force_reason, promotion.at                                                            promotion
Each version's description (shown at the top of its page in the MLflow UI) is rebuilt from these tags whenever
they change: gate decision and reasons, promotion, metrics, lineage. The registered model's description says
what it is and how to pull the champion.
The registered model's `champion_history` tag (JSON list, oldest first) holds the champions that were replaced,
so `rollback` can restore them in turn.

Like with like: the gate compares the candidate with the champion only in one evaluation context. When the
champion's recorded context differs from the candidate's (new data, a retrained lenet extractor, another sample
count or seed), the champion is re-evaluated in the candidate's context (measure_version: the current cfg, checked
to reproduce that context; cached as JSON under eval.cache_dir/champions, keyed by version, run and context hash)
before the decision; when it cannot be, the gate says why and decides on the thresholds alone (flows.gate).

Concurrency: every alias move happens under one promotion lock, and the comparison with the champion is redone
inside it, so promotions finishing together serialise and the better model ends as champion. The lock is a lock
file beside an embedded SQLite store; for a tracking server, a Prefect global concurrency limit (one slot) when a
Prefect server is configured, a service every host that promotes already shares (see promotion_lock).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mlflow
from filelock import FileLock, Timeout
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from flows.gate import FAILED_RUN_STATUSES, ChampionMetrics, Decision, decide
from gan_core.config import Config
from gan_core.config.metrics import METRICS
from gan_core.errors import UserError, first_line
from gan_core.evaluation.context import (
    champion_cache_path,
    context_difference,
    context_hash,
    context_tags,
    describe,
    read_measurement,
    recorded_context,
    recorded_hash,
    short,
    write_measurement,
)
from gan_core.tracking.runs import log_metrics
from gan_core.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    configure,
    ensure_experiment,
    experiment_artifact_location,
    open_store,
    sqlite_path,
    store_exists,
    tracking_uri,
)

if TYPE_CHECKING:  # the evaluation (torch) is imported only when a version is measured
    from gan_core.evaluation.evaluate import Evaluation

log = logging.getLogger(__name__)

METRIC_PREFIX = "metric."
HISTORY_TAG = "champion_history"
HISTORY_LIMIT = 100
LOCK_TIMEOUT_S = 120.0


# ----------------------------------------------------------------------------- store helpers


def _is_missing(e: MlflowException) -> bool:
    return e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def check_promotion_args(version: str | int, force: bool = False, reason: str | None = None) -> None:
    """The arguments of a promotion, checked before any store is opened: a version number, a reason with force."""
    if not str(version).isdigit():
        raise UserError(f"model version {version!r} is not a version number; expected e.g. 3 (see `ganops models`)")
    if force and not (reason and reason.strip()):
        raise UserError("--force needs --reason TEXT saying why the gate is overridden (it is recorded on the version)")


def _version(client: MlflowClient, cfg: Config, version: str | int) -> ModelVersion:
    name = cfg.registry.model_name
    check_promotion_args(version)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if not _is_missing(e):
            raise
    _require_model(client, cfg)
    raise UserError(f"{name!r} has no version {version}; `ganops models` lists the versions")


def _model_exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if _is_missing(e):
            return False
        raise
    return True


def _require_model(client: MlflowClient, cfg: Config) -> None:
    name = cfg.registry.model_name
    if not _model_exists(client, name):
        uri = tracking_uri(cfg.registry)
        raise UserError(f"no registered model {name!r} in {uri}; run `ganops retrain` to register one")


def _run_id(mv: ModelVersion) -> str | None:
    """The training run behind a version (the tag covers versions registered from a non-run source)."""
    return mv.run_id or mv.tags.get("run_id")


def version_metrics(mv: ModelVersion) -> dict[str, float]:
    """The evaluation metrics recorded on a version (`metric.<name>` tags)."""
    out = {}
    for key, value in mv.tags.items():
        name = key.removeprefix(METRIC_PREFIX)
        if key.startswith(METRIC_PREFIX) and "." not in name:
            try:
                out[name] = float(value)
            except ValueError:
                out[name] = math.nan
    return out


def _history(client: MlflowClient, name: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def _set_history(client: MlflowClient, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_LIMIT:]))


def _set_tags(client: MlflowClient, name: str, version: str, tags: Mapping[str, Any]) -> None:
    """Set the tags, then rebuild the version's description from them (the description follows the tags)."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    _update_description(client, name, str(version))


def _move_stage(
    client: MlflowClient, cfg: Config, name: str, version: str, role: Literal["champion", "challenger"]
) -> None:
    """With registry.stages set, put `version` in the stage mapped to `role` (champion | challenger), archiving
    the version that held it: the stage follows the alias in the same locked step. No-op when stages are off."""
    stage = cfg.registry.stages.get(role)
    if stage is None:
        return
    _stages_deprecated_once()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # said once per process by _stages_deprecated_once
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=True)


@functools.cache
def _stages_deprecated_once() -> None:
    logging.getLogger(__name__).warning(
        "registry.stages is set: ganops also moves MLflow model stages, which MLflow deprecates since 2.9 "
        "(aliases replace them); shown once"
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextmanager
def promotion_lock(cfg: Config) -> Iterator[None]:
    """Serialise alias moves: a lock file beside a SQLite store; for a tracking server, a Prefect global
    concurrency limit named after it when a Prefect server is configured (hosts that promote share it), else a
    lock file per tracking URI on this host.

    fcntl-style locks (filelock) are released by the OS if the holder dies, and a Prefect slot is a lease that
    expires, so a crash never wedges promotion.
    """
    uri = tracking_uri(cfg.registry)
    db = sqlite_path(uri)
    if db is None and prefect_server_url() is not None:
        with shared_promotion_lock(uri):
            yield
        return
    if db is not None:
        lock_path = db.with_name(db.name + ".promote.lock")
    else:
        # One host only: several hosts promoting against one tracking server need a Prefect server (above).
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        lock_path = Path.home() / ".cache" / "ganops" / "locks" / f"{digest}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_path, timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise UserError(f"another promotion holds {lock_path} for over {LOCK_TIMEOUT_S:.0f} s; retry later") from None


def prefect_server_url() -> str | None:
    """The Prefect API this process talks to when it is a server (PREFECT_API_URL), None for the ephemeral one."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


LOCK_LEASE_S = 60.0
"""A promotion's Prefect slot is a lease renewed while it runs: a holder that dies frees it within this time."""


@contextmanager
def shared_promotion_lock(tracking: str) -> Iterator[None]:
    """One slot of the global concurrency limit `ganops-promote-<hash of the tracking URI>` (created with limit 1
    on first use), held while the alias moves: every host promoting to that registry waits for it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = f"ganops-promote-{hashlib.sha256(tracking.encode()).hexdigest()[:16]}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # another host created it first
    try:
        # strict: a limit that vanished must fail the promotion, not let it run unserialised.
        with concurrency(name, occupy=1, timeout_seconds=LOCK_TIMEOUT_S, lease_duration=LOCK_LEASE_S, strict=True):
            yield
    except TimeoutError:
        raise UserError(f"another promotion holds the Prefect concurrency limit {name!r} for over "
                        f"{LOCK_TIMEOUT_S:.0f} s; retry later") from None


# ----------------------------------------------------------------------------- descriptions
def model_description(cfg: Config) -> str:
    """The registered model's description (markdown): what it is and how to pull the champion."""
    name, alias, uri = cfg.registry.model_name, cfg.registry.champion_alias, cfg.registry.model_uri()
    if cfg.model.arch == "cyclegan":
        what = f"Image-to-image translator ({cfg.data.source} ↔ {cfg.data.target}, CycleGAN) trained by ganops"
        use = (f"    python -c \"import gan_core; G_AB = gan_core.load_translator('{uri}', direction='a2b')\"\n"
               f"    ganops translate --model {uri} --input my.png --out translated/\n")
    else:
        what = "GAN generator trained by ganops"
        use = (f"    python -c \"import gan_core; G = gan_core.load_generator('{uri}', device='auto')\"\n"
               f"    ganops generate --model {uri} -n 64 --out grid.png\n")
    return (
        f"{what} (`ganops retrain`): one version per training, each gated on its "
        f"evaluation (thresholds + beat the champion). `@{alias}` is the promoted one, "
        f"`@{cfg.registry.challenger_alias}` the latest that passed the gate.\n\n"
        "Use the champion:\n\n"
        f"{use}"
        f"    mlflow models serve -m {uri} --env-manager local -h 127.0.0.1 -p 5001\n\n"
        "A version's description holds its gate decision and reasons; its tags hold the lineage "
        "(data_version, git_commit, config_hash, run_id) and `metric.<name>` values. The run "
        f"`{name} across versions` in experiment `{cfg.registry.experiment}{VERSIONS_EXPERIMENT_SUFFIX}` charts "
        "every version's metrics (step = version number)."
    )


def _describe_model(client: MlflowClient, cfg: Config) -> None:
    # Only when empty: a description edited in the UI stays.
    name = cfg.registry.model_name
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=model_description(cfg))


def version_description(tags: Mapping[str, str]) -> str:
    """A version's description (markdown), rebuilt from its tags: the gate decision and its reasons, the
    promotion or rollback, the evaluation and the lineage. The version page shows it at the top, where the
    tags table shows only a few of the ~35 tags."""
    gate_decision = tags.get("gate.decision")
    head = f"**Gate: {gate_decision}**" if gate_decision else "**Gate: not applied yet**"
    lines = [head, ""]
    lines += [f"- {reason}" for reason in tags.get("gate.reasons", "").splitlines() if reason]
    promotion = tags.get("promotion.decision")
    if promotion:
        lines += ["", f"**Promotion: {promotion}** ({tags.get('promotion.at', '?')})"]
        previous = tags.get("promotion.previous_champion")
        if previous and previous != "none":
            lines.append(f"- replaced champion v{previous}")
        if tags.get("promotion.force_reason"):
            lines.append(f"- forced past the gate: {tags['promotion.force_reason']}")
    if tags.get("rollback.demoted_at"):
        lines += ["", f"**Rolled back** ({tags['rollback.demoted_at']}): v{tags.get('rollback.replaced_by')} "
                  "is champion again"]
    if tags.get("rollback.restored_at"):
        lines += ["", f"**Restored as champion by a rollback** ({tags['rollback.restored_at']})"]
    metrics = sorted((k.removeprefix(METRIC_PREFIX), v) for k, v in tags.items()
                     if k.startswith(METRIC_PREFIX) and "." not in k.removeprefix(METRIC_PREFIX))
    if metrics:
        lines += ["", "| metric | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in metrics]
    if recorded_context(tags) is not None:
        lines += ["", f"Evaluation: {describe(recorded_context(tags))}"]
    lineage_keys = ("data_version", "data_source", "git_commit", "git_dirty", "config_hash", "run_id")
    known = [f"{k} `{tags[k]}`" for k in lineage_keys if tags.get(k)]
    if known:
        lines += ["", "Lineage: " + ", ".join(known)]
    return "\n".join(lines)


def _update_description(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """Rewrite a version's description from its current tags; return the updated version."""
    mv = client.get_model_version(name, version)
    client.update_model_version(name, version, description=version_description(mv.tags))
    return client.get_model_version(name, version)


# ----------------------------------------------------------------------------- metrics across versions
VERSIONS_EXPERIMENT_SUFFIX = "-versions"
VERSIONS_OF_TAG = "ganops.versions_of"
"""Tag of the run that holds one model's metrics across versions (its value: the model's name)."""
VERSIONS_RUN_TAG = "versions_run_id"
"""Registered model tag: the id of that run."""


def versions_run_id(cfg: Config, client: MlflowClient) -> str:
    """The run holding the model's evaluation metrics with step = version number, in experiment
    `<experiment>-versions` (kept out of the trainings' experiment so it never mixes with training runs), so the
    MLflow UI charts FID and every other metric across versions on one run page. Created on first use."""
    name = cfg.registry.model_name
    exp_id = ensure_experiment(
        client, f"{cfg.registry.experiment}{VERSIONS_EXPERIMENT_SUFFIX}", experiment_artifact_location(cfg.registry),
        {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
         NOTE_TAG: "One run per registered model: its versions' evaluation metrics, step = version number."},
    )
    with promotion_lock(cfg):  # two registrations at once must not create two such runs
        found = client.search_runs([exp_id], f"tags.`{VERSIONS_OF_TAG}` = '{name}'", max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(exp_id, run_name=f"{name} across versions", tags={VERSIONS_OF_TAG: name})
        client.set_terminated(run.info.run_id, "FINISHED")
        client.set_registered_model_tag(name, VERSIONS_RUN_TAG, run.info.run_id)
        return run.info.run_id


def log_version_metrics(cfg: Config, version: str, metrics: Mapping[str, float], client: MlflowClient) -> None:
    """Log a version's evaluation metrics on versions_run_id's run at step = the version number."""
    if metrics:
        log_metrics(client, versions_run_id(cfg, client), metrics, step=int(version))


# ----------------------------------------------------------------------------- registration
def register_candidate(
    cfg: Config,
    model_uri: str,
    run_id: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A new version of cfg.registry.model_name from `model_uri`, tagged with lineage, run id and metrics.

    `tags` carries the lineage (gan_core.tracking.runs.training_tags); numeric `metrics` become `metric.<name>` tags
    with the extractor that produced each; `context` is their evaluation context (Evaluation.context), recorded
    as eval.* tags (without one, the gate cannot compare the version with a champion). Returns latest_version()'s
    form for the new version.
    One training run gives one version: when `run_id` already has one (a retried register whose first attempt
    reached the store), that version is returned instead of registering a duplicate.
    """
    client = configure(cfg.registry, create=True)  # only registration creates a store; mlflow.register_model
    name = cfg.registry.model_name
    if run_id:
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if existing:
            return _describe(max(existing, key=lambda mv: int(mv.version)))
    metric_values = {k: float(v) for k, v in (metrics or {}).items() if _is_number(v)}
    version_tags: dict[str, str] = {k: str(v) for k, v in (tags or {}).items()}
    if run_id:
        version_tags["run_id"] = run_id
    for metric, value in sorted(metric_values.items()):
        version_tags[f"{METRIC_PREFIX}{metric}"] = repr(value)
        version_tags[f"{METRIC_PREFIX}{metric}.extractor"] = METRICS[metric].space or "none"
    if context is not None:
        version_tags.update(context_tags(context))
    version_tags["registered_at"] = _now()
    mv = mlflow.register_model(model_uri, name, tags=version_tags)
    _describe_model(client, cfg)
    log_version_metrics(cfg, str(mv.version), metric_values, client)
    return _describe(_update_description(client, name, str(mv.version)))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _describe(mv: ModelVersion) -> dict[str, Any]:
    return {
        "version": str(mv.version),
        "run_id": _run_id(mv),
        "source": mv.source,
        "created": mv.creation_timestamp,
        "aliases": sorted(mv.aliases or []),
        "stage": mv.current_stage,
        "metrics": version_metrics(mv),
        "context_hash": recorded_hash(mv.tags),
        "tags": dict(mv.tags),
    }


def latest_version(cfg: Config) -> dict[str, Any] | None:
    """The newest version of the model (version, run_id, aliases, metrics, tags), or None when there is none."""
    versions = list_versions(cfg, missing_ok=True)
    return versions[0] if versions else None


def list_versions(cfg: Config, missing_ok: bool = False) -> list[dict[str, Any]]:
    """Every version of the model, newest first, with aliases, metrics and tags.

    `missing_ok`: no store or no registered model yet gives [] (and creates no store)."""
    if missing_ok and not store_exists(cfg.registry):
        return []
    client = open_store(cfg.registry)
    name = cfg.registry.model_name
    if missing_ok and not _model_exists(client, name):
        return []
    _require_model(client, cfg)
    # search_model_versions may leave aliases out; the registered model holds the authoritative map.
    aliases: dict[str, list[str]] = {}
    for alias, version in _aliases(client, name).items():
        aliases.setdefault(version, []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'", max_results=10_000):
        row = _describe(mv)
        row["aliases"] = sorted(aliases.get(row["version"], []))
        rows.append(row)
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def champion(cfg: Config) -> dict[str, Any] | None:
    """The version holding the champion alias (version, run_id, aliases, metrics, tags), or None (no store, no
    model or no champion yet; creates nothing)."""
    if not store_exists(cfg.registry):
        return None
    client = open_store(cfg.registry)
    name = cfg.registry.model_name
    if not _model_exists(client, name):
        return None
    aliases = _aliases(client, name)
    version = aliases.get(cfg.registry.champion_alias)
    if version is None:
        return None
    row = _describe(client.get_model_version(name, version))
    row["aliases"] = sorted(alias for alias, v in aliases.items() if v == version)
    return row


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in (client.get_registered_model(name).aliases or {}).items()}


# ----------------------------------------------------------------------------- gate and promotion
def _apply_gate(client: MlflowClient, cfg: Config, mv: ModelVersion, champion: str | None) -> Decision:
    """Gather what the gate reads for one version (its run's status, its metrics and context, the champion's
    metrics in that context) and decide."""
    run_id = _run_id(mv)
    run = (run_id, client.get_run(run_id).info.status) if run_id else None
    context = recorded_context(mv.tags)
    hash_ = context_hash(context) if context is not None else None
    measured = None
    if champion == str(mv.version):
        measured = ChampionMetrics(champion, version_metrics(mv), hash_)
    elif champion is not None:
        measured = champion_in_context(cfg, client.get_model_version(mv.name, champion), context)
    return decide(cfg.gate, str(mv.version), version_metrics(mv), run, measured, hash_)


def _measure_champion_ahead(client: MlflowClient, cfg: Config, mv: ModelVersion) -> None:
    """Re-measure the current champion in the candidate's context before the promotion lock is taken, so the
    holder reads it from the cache: an evaluation at production settings can outlast LOCK_TIMEOUT_S, which other
    promoters wait at most. Under the lock the champion is read again; if it changed meanwhile, that one is
    measured there."""
    champion = _aliases(client, mv.name).get(cfg.registry.champion_alias)
    if champion is not None and champion != str(mv.version):
        champion_in_context(cfg, client.get_model_version(mv.name, champion), recorded_context(mv.tags))


def champion_in_context(cfg: Config, champion: ModelVersion, context: Mapping[str, Any] | None) -> ChampionMetrics:
    """The champion's metrics in the candidate's `context`: as recorded when it was measured in that context,
    else re-measured in it (measure_version); `unavailable` says why when neither is possible."""
    recorded, recorded_hash_ = version_metrics(champion), recorded_hash(champion.tags)
    version = str(champion.version)
    if context is None or recorded_hash_ == context_hash(context):
        return ChampionMetrics(version, recorded, recorded_hash_)  # the gate compares, or notes the missing context
    metrics, why = measure_version(cfg, champion, context)
    if metrics is None:
        return ChampionMetrics(version, recorded, recorded_hash_, unavailable=why)
    return ChampionMetrics(version, metrics, context_hash(context), recorded=recorded,
                           recorded_context_hash=recorded_hash_)


def measure_version(
    cfg: Config, mv: ModelVersion, context: Mapping[str, Any]
) -> tuple[dict[str, float] | None, str | None]:
    """(metrics, None) of version `mv` in `context`, from the cache or by evaluating it with `cfg` (whose data
    and eval settings must reproduce `context`: checked, never assumed); (None, why) when that cannot be done."""
    want = context_hash(context)
    cached = read_measurement(_cache_path(cfg, mv, want), want)
    if cached is not None:
        return cached, None
    current, measured_on = _current_data_version(cfg), str(context.get("data_version"))
    if current is None:
        return None, f"no prepared data at {cfg.data.prepared_dir!r} to measure it on"
    if current != measured_on:
        # Cheap and the usual case (`ganops promote N` after the data changed): no evaluation to find it out.
        return None, (f"the prepared data ({cfg.data.prepared_dir}) is at version {current[:12]}, the candidate "
                      f"was measured on {measured_on[:12]}")
    try:
        evaluation = evaluate_version(cfg, str(mv.version), subdir="champion")
    except UserError as e:  # a gone package, another task's model, a missing classifier, ...: the gate says so
        return None, first_line(e)
    except Exception as e:  # unexpected: logged with its traceback, and still never a cross-context comparison
        log.warning("could not re-evaluate version %s", mv.version, exc_info=True)
        return None, f"{type(e).__name__}: {first_line(e)}"
    got = evaluation.context
    if context_hash(got) != want:
        return None, (f"the current settings measure in context {short(context_hash(got))}, not the candidate's "
                      f"{short(want)} ({context_difference(context, got)})")
    return evaluation.metrics, None


def evaluate_version(cfg: Config, version: str, subdir: str) -> Evaluation:
    """Evaluate registered `version` with `cfg` (outputs under {eval.out_dir}/{subdir}, so the candidate's files
    stay) and cache its metrics under the context they were measured in, for the gate (measure_version). The gate
    and the monitor both measure a registered version through here."""
    from gan_core.evaluation.evaluate import evaluate

    eval_cfg = cfg.model_copy(deep=True)
    eval_cfg.eval.out_dir = str(Path(cfg.eval.out_dir) / subdir)
    client = configure(cfg.registry)  # load_generator("models:/...") reads MLflow's fluent URI
    mv = _version(client, cfg, version)
    evaluation = evaluate(eval_cfg, generator=cfg.registry.version_uri(mv.version))
    path = _cache_path(cfg, mv, context_hash(evaluation.context))
    try:
        write_measurement(path, evaluation.context, evaluation.metrics, source=f"{subdir} evaluation")
    except OSError as e:  # an unwritable cache costs a re-evaluation next time, not this result
        log.warning("could not cache the measurement of version %s at %s: %s", mv.version, path, e)
    return evaluation


def _cache_path(cfg: Config, mv: ModelVersion, hash_: str) -> Path:
    return champion_cache_path(cfg.eval.cache_dir, mv.name, str(mv.version), _run_id(mv), hash_)


def _current_data_version(cfg: Config) -> str | None:
    from gan_core.data.version import data_version

    try:
        return data_version(cfg.data.prepared_dir)
    except UserError:  # no prepared data here: nothing can be re-evaluated
        return None


def _record_gate(client: MlflowClient, mv: ModelVersion, decision: Decision, cfg: Config) -> None:
    _set_tags(
        client,
        mv.name,
        mv.version,
        {
            "gate.decision": "passed" if decision.passed else "failed",
            "gate.reasons": "\n".join(decision.reasons),
            "gate.policy": json.dumps(cfg.gate.model_dump(mode="json"), sort_keys=True),
            "gate.checked_at": _now(),
        },
    )


def gate(cfg: Config, version: str | int) -> dict[str, Any]:
    """Apply the gate (run not failed, thresholds, beat the champion) to a version and tag the decision.

    A passing version gets the challenger alias; nothing else moves. Returns
    {"version", "passed", "reasons", "champion"}.
    """
    client = open_store(cfg.registry)
    mv = _version(client, cfg, version)
    _measure_champion_ahead(client, cfg, mv)
    with promotion_lock(cfg):
        champion = _aliases(client, mv.name).get(cfg.registry.champion_alias)
        decision = _apply_gate(client, cfg, mv, champion)
        _record_gate(client, mv, decision, cfg)
        if decision.passed:
            client.set_registered_model_alias(mv.name, cfg.registry.challenger_alias, mv.version)
            if str(mv.version) != champion:  # the champion keeps its champion stage
                _move_stage(client, cfg, mv.name, str(mv.version), "challenger")
    return {"version": str(mv.version), **decision.as_dict(), "champion": champion}


def promote(cfg: Config, version: str | int, force: bool = False, reason: str | None = None) -> dict[str, Any]:
    """Move the champion alias to `version` when it passes the gate against the current champion.

    The check is redone under the promotion lock, so of two promotions racing, the better model ends as champion.
    `force=True` skips the gate (never a failed run's) and needs `reason`; both are recorded as tags.
    Returns {"version", "promoted", "decision", "reasons", "champion", "previous_champion"}.
    """
    check_promotion_args(version, force, reason)
    client = open_store(cfg.registry)
    mv = _version(client, cfg, version)
    name, v = mv.name, str(mv.version)
    _measure_champion_ahead(client, cfg, mv)
    with promotion_lock(cfg):
        champion = _aliases(client, name).get(cfg.registry.champion_alias)
        decision = _apply_gate(client, cfg, mv, champion)
        _record_gate(client, mv, decision, cfg)
        passed, reasons = decision.passed, decision.reasons
        run_id = _run_id(mv)
        if force and run_id and client.get_run(run_id).info.status in FAILED_RUN_STATUSES:
            raise UserError(f"version {v} comes from run {run_id}, which failed; a failed run is never promoted")
        if champion == v:
            return _result(v, False, "unchanged", decision, champion, None)
        if not (passed or force):
            _set_tags(client, name, v, {"promotion.decision": "rejected", "promotion.reasons": "\n".join(reasons),
                                        "promotion.at": _now()})
            return _result(v, False, "rejected", decision, champion, None)
        if passed:
            client.set_registered_model_alias(name, cfg.registry.challenger_alias, v)
        client.set_registered_model_alias(name, cfg.registry.champion_alias, v)
        # One stage per version: a version that is both challenger and champion is in the champion's stage.
        _move_stage(client, cfg, name, v, "champion")
        if champion is not None:
            _set_history(client, name, [*_history(client, name), champion])
        outcome = "promoted" if passed else "forced"
        tags = {"promotion.decision": outcome, "promotion.reasons": "\n".join(reasons),
                "promotion.previous_champion": champion or "none", "promotion.at": _now()}
        if not passed:
            tags["promotion.force_reason"] = reason.strip()  # type: ignore[union-attr]  # checked above
        _set_tags(client, name, v, tags)
        return _result(v, True, outcome, decision, v, champion)


def _result(
    version: str, promoted: bool, outcome: str, decision: Decision, champion: str | None, previous: str | None
) -> dict[str, Any]:
    return {"version": version, "promoted": promoted, "decision": outcome, **decision.as_dict(),
            "champion": champion, "previous_champion": previous}


def rollback(cfg: Config) -> dict[str, Any]:
    """Point the champion alias back at the version it replaced; {"champion", "replaced"}.

    Raises UserError when there is no champion or nothing to roll back to.
    """
    client = open_store(cfg.registry)
    _require_model(client, cfg)
    name, alias = cfg.registry.model_name, cfg.registry.champion_alias
    with promotion_lock(cfg):
        current = _aliases(client, name).get(alias)
        if current is None:
            raise UserError(f"{name!r} has no @{alias}; nothing to roll back (promote a version first)")
        history = _history(client, name)
        while history:
            previous = history.pop()
            try:
                client.get_model_version(name, previous)
                break
            except MlflowException as e:
                if not _is_missing(e):
                    raise
        else:
            raise UserError(f"@{alias} v{current} of {name!r} replaced no earlier champion; nothing to roll back to")
        client.set_registered_model_alias(name, alias, previous)
        _move_stage(client, cfg, name, previous, "champion")
        _set_history(client, name, history)
        at = _now()
        _set_tags(client, name, current, {"rollback.demoted_at": at, "rollback.replaced_by": previous})
        _set_tags(client, name, previous, {"rollback.restored_at": at, "rollback.restored_over": current})
    return {"champion": previous, "replaced": current}
