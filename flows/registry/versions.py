"""A model's versions: register a candidate (one version per training run, tagged with what code reads and people
filter by), list them, find the newest and the champion, and chart the promoted versions' metrics on one run.

    v = register_candidate(registry, model_uri, run_id=run_id, metrics=metrics, tags=lineage_tags)["version"]
    list_versions(registry)            # newest first: version, run_id, aliases, stage, metrics, context hash, tags
    latest_version(registry), champion(registry)     # one such row, or None
    why_no_alias(registry, "models:/ganops-generator@champion")   # why that names no version, and what to do

A version's tags (at most ~12, so the versions table stays readable):
    data_version, git_commit, git_dirty                                  lineage (VERSION_TAGS)
    metrics = {"fid_lenet": 23.84..., ...} (JSON, full precision)         the evaluation it was registered with
    eval.context (canonical JSON), eval.context_hash                      the evaluation context the metrics hold in
    gate.* and promotion.* (flows.registry.promotion)                     what the gate decided
The rest of the lineage (data source, config hash, training key, device, torch, recipe, sweep trial) is the
training run's tags, which the version's description quotes (flows.registry.descriptions); the run id is the
version's own field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flows.registry.descriptions import describe_model, update_description
from flows.registry.handle import (
    METRICS_TAG,
    Registry,
    is_missing,
    is_number,
    metrics_tag,
    run_id_of,
    version_metrics,
)
from gan_core.config import Config
from gan_core.evaluation.context import CONTEXT_HASH_TAG, CONTEXT_TAG, context_tags, recorded_hash
from gan_core.tracking.runs import log_metrics
from gan_core.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    ensure_experiment,
    experiment_artifact_location,
)

VERSION_TAGS = ("data_version", "git_commit", "git_dirty")
"""The lineage tags a version carries itself (`ganops models`, the monitor and the report read them)."""
CHAMPIONS_OF_TAG = "ganops.champions_of"
"""Tag of the run that charts one model's promoted versions (its value: the model's name)."""
CHAMPIONS_RUN_TAG = "champions_run_id"
"""Registered model tag: the id of that run."""


# ----------------------------------------------------------------------------- registration
def register_candidate(
    registry: Registry | Config,
    model_uri: str,
    run_id: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A new version of the model from `model_uri`, tagged with lineage, run id and metrics.

    `tags` carries the lineage (gan_core.tracking.runs.training_tags): the version keeps VERSION_TAGS of it (the run
    holds all of it); numeric `metrics` become the METRICS_TAG; `context` is their evaluation context
    (Evaluation.context), recorded as eval.context and its hash (without one, the gate cannot compare the version
    with a champion). Returns latest_version()'s form for the new version.
    One training run gives one version: when `run_id` already has one (a retried register whose first attempt
    reached the store), that version is returned instead of registering a duplicate.
    """
    registry = Registry.of(registry)
    client = registry.client(create=True)  # only registration creates a store
    registry.point_fluent_api()  # mlflow.register_model reads it
    name = registry.name
    if run_id:
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if existing:
            return describe_version(max(existing, key=lambda mv: int(mv.version)))
    metric_values = {k: float(v) for k, v in (metrics or {}).items() if is_number(v)}
    version_tags = {k: str(v) for k, v in (tags or {}).items() if k in VERSION_TAGS}
    if metric_values:
        version_tags[METRICS_TAG] = metrics_tag(metric_values)
    if context is not None:
        recorded = context_tags(context)
        version_tags.update({k: recorded[k] for k in (CONTEXT_TAG, CONTEXT_HASH_TAG)})
    mv = mlflow.register_model(model_uri, name, tags=version_tags)
    describe_model(registry)
    return describe_version(update_description(registry, str(mv.version)))


def describe_version(mv: ModelVersion) -> dict[str, Any]:
    """A version as a row: version, run_id, source, created, aliases, stage, metrics, context_hash, tags."""
    return {
        "version": str(mv.version),
        "run_id": run_id_of(mv),
        "source": mv.source,
        "created": mv.creation_timestamp,
        "aliases": sorted(mv.aliases or []),
        "stage": mv.current_stage,
        "metrics": version_metrics(mv),
        "context_hash": recorded_hash(mv.tags),
        "tags": dict(mv.tags),
    }


# ----------------------------------------------------------------------------- listing
def latest_version(registry: Registry | Config) -> dict[str, Any] | None:
    """The newest version of the model (version, run_id, aliases, metrics, tags), or None when there is none."""
    versions = list_versions(registry, missing_ok=True)
    return versions[0] if versions else None


def list_versions(registry: Registry | Config, missing_ok: bool = False) -> list[dict[str, Any]]:
    """Every version of the model, newest first, with aliases, metrics and tags.

    `missing_ok`: no store or no registered model yet gives [] (and creates no store)."""
    registry = Registry.of(registry)
    if missing_ok and not registry.store_exists():
        return []
    client = registry.client()
    if missing_ok and not registry.model_exists():
        return []
    registry.require_model()
    # search_model_versions may leave aliases out; the registered model holds the authoritative map.
    aliases: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        aliases.setdefault(version, []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{registry.name}'", max_results=10_000):
        row = describe_version(mv)
        row["aliases"] = sorted(aliases.get(row["version"], []))
        rows.append(row)
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def champion(registry: Registry | Config) -> dict[str, Any] | None:
    """The version holding the champion alias (version, run_id, aliases, metrics, tags), or None (no store, no
    model or no champion yet; creates nothing)."""
    registry = Registry.of(registry)
    if not registry.store_exists() or not registry.model_exists():
        return None
    aliases = registry.aliases()
    version = aliases.get(registry.champion_alias)
    if version is None:
        return None
    row = describe_version(registry.client().get_model_version(registry.name, version))
    row["aliases"] = sorted(alias for alias, v in aliases.items() if v == version)
    return row


ALIAS_URI = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)")


def why_no_alias(registry: Registry, uri: str, params: str | None = None, recipe: str | None = None) -> str | None:
    """Why `uri` (models:/<name>@<alias>, in the handle's store) names no version, and what to do, in one line; None
    when it names one (or is not such a URI). The newest version says why: the gate rejected it (its failed checks),
    or it was never gated. `params`, `recipe`: the --params file and --recipe the hints should repeat."""
    match = ALIAS_URI.fullmatch(uri)
    if match is None:
        return None
    name, alias = match["name"], match["alias"]
    if not registry.store_exists() or not _model_exists(registry.client(), name):
        retrain = "ganops retrain" + (f" --params {params}" if params else "") + (f" recipe={recipe}" if recipe else "")
        return f"{uri}: no registered model {name!r} in {registry.uri}; `{retrain}` registers one"
    client = registry.client()
    aliases = {str(a): str(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
    if alias in aliases:
        return None
    versions = sorted(client.search_model_versions(f"name = '{name}'", max_results=10_000),
                      key=lambda mv: int(mv.version), reverse=True)
    if not versions:
        return f"{uri}: {name!r} has no versions yet; `ganops retrain` registers one"
    newest = versions[0]
    v = str(newest.version)
    if alias != registry.champion_alias:  # not an alias the gate moves: say which ones exist
        held = ", ".join(f"@{a} = v{aliases[a]}" for a in sorted(aliases)) or "none"
        return (f"{uri}: {name!r} has no alias @{alias} (its aliases: {held}); name one of them, or a version such "
                f"as models:/{name}/{v} (`ganops models` lists them)")
    who = f"the only version, v{v}," if len(versions) == 1 else f"the newest of its {len(versions)} versions, v{v},"
    decision = newest.tags.get("gate.decision")
    if decision == "failed":
        failed = [r for r in newest.tags.get("gate.reasons", "").splitlines() if r.endswith(": fail")]
        why = f"was rejected by the gate ({'; '.join(failed) or 'see `ganops models`'})"
    elif decision == "passed":
        why = "passed the gate but was not promoted"
    else:
        why = "was never gated"
    options = (f" --params {params}" if params else "") + (f" --recipe {recipe}" if recipe else "")
    return (f"{uri}: no version of {name!r} is @{alias}: {who} {why}. Use it as it is with --model "
            f"models:/{name}/{v}, or make it @{alias} with `ganops promote {v} --force --reason \"why\"{options}`")


def _model_exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if is_missing(e):
            return False
        raise
    return True


# ----------------------------------------------------------------------------- the champions' metrics
def champions_run_id(registry: Registry) -> str:
    """The run charting the model's promoted versions: their evaluation metrics with step = version number, in
    experiment `<experiment>-versions` (kept out of the trainings' experiment so it never mixes with training runs),
    so the MLflow UI draws FID and every other metric across champions on one run page. Rejected candidates are
    not on it: they are the trainings' runs, compared in their own experiment. Created on first use."""
    client, name = registry.client(), registry.name
    exp_id = ensure_experiment(
        client, registry.versions_experiment, experiment_artifact_location(registry.cfg.registry),
        {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
         NOTE_TAG: "One run per registered model: the evaluation metrics of each version promoted to champion, "
                   "step = version number."},
    )
    with registry.lock():  # two promotions at once must not create two such runs
        found = client.search_runs([exp_id], f"tags.`{CHAMPIONS_OF_TAG}` = '{name}'", max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(exp_id, run_name=f"{name} champions", tags={
            CHAMPIONS_OF_TAG: name,
            NOTE_TAG: f"The evaluation metrics of each version of `{name}` promoted to "
                      f"`@{registry.champion_alias}`, step = version number (rejected candidates are the runs of "
                      f"experiment `{registry.cfg.registry.experiment_name}`)."})
        client.set_terminated(run.info.run_id, "FINISHED")
        client.set_registered_model_tag(name, CHAMPIONS_RUN_TAG, run.info.run_id)
        return run.info.run_id


def log_champion_metrics(registry: Registry, version: str, metrics: Mapping[str, float]) -> None:
    """Log a promoted version's evaluation metrics on champions_run_id's run at step = the version number."""
    if metrics:
        log_metrics(registry.client(), champions_run_id(registry), metrics, step=int(version))
