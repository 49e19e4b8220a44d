"""The champion's numbers in a candidate's evaluation context: like with like.

The gate compares a candidate with the champion only in one evaluation context. When the champion's recorded
context differs from the candidate's (new data, a retrained lenet extractor, another sample count or seed), the
champion is re-evaluated in the candidate's context (measure_version: the current cfg, checked to reproduce that
context; cached as JSON under eval.cache_dir/champions, keyed by version, run and context hash) before the
decision; when it cannot be, the gate says why and decides on the thresholds alone (flows.gate).

    champion_in_context(registry, champion_mv, candidate_context)   # ChampionMetrics for flows.gate.decide
    evaluate_version(registry, "3", subdir="monitor")                # an Evaluation, cached for the gate

The prepared data's version comes from the handle (Registry.data_version): handed over by the flow that versioned
the data, else read from disk once per command.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities.model_registry import ModelVersion

from flows.gate import ChampionMetrics
from flows.registry.handle import Registry, run_id_of, version_metrics
from gan_core.config import Config
from gan_core.errors import UserError, first_line
from gan_core.evaluation.context import (
    champion_cache_path,
    context_difference,
    context_hash,
    read_measurement,
    recorded_context,
    recorded_hash,
    short,
    write_measurement,
)

if TYPE_CHECKING:  # the evaluation (torch) is imported only when a version is measured
    from gan_core.evaluation.evaluate import Evaluation

log = logging.getLogger(__name__)


def measure_champion_ahead(registry: Registry, mv: ModelVersion) -> None:
    """Re-measure the current champion in the candidate's context before the promotion lock is taken, so the
    holder reads it from the cache: an evaluation at production settings can outlast LOCK_TIMEOUT_S, which other
    promoters wait at most. Under the lock the champion is read again; if it changed meanwhile, that one is
    measured there."""
    champion = registry.champion_version()
    if champion is not None and champion != str(mv.version):
        champion_in_context(registry, registry.client().get_model_version(mv.name, champion),
                            recorded_context(mv.tags))


def champion_in_context(
    registry: Registry, champion: ModelVersion, context: Mapping[str, Any] | None
) -> ChampionMetrics:
    """The champion's metrics in the candidate's `context`: as recorded when it was measured in that context,
    else re-measured in it (measure_version); `unavailable` says why when neither is possible."""
    recorded, recorded_hash_ = version_metrics(champion), recorded_hash(champion.tags)
    version = str(champion.version)
    if context is None or recorded_hash_ == context_hash(context):
        return ChampionMetrics(version, recorded, recorded_hash_)  # the gate compares, or notes the missing context
    metrics, why = measure_version(registry, champion, context)
    if metrics is None:
        return ChampionMetrics(version, recorded, recorded_hash_, unavailable=why)
    return ChampionMetrics(version, metrics, context_hash(context), recorded=recorded,
                           recorded_context_hash=recorded_hash_)


def measure_version(
    registry: Registry, mv: ModelVersion, context: Mapping[str, Any]
) -> tuple[dict[str, float] | None, str | None]:
    """(metrics, None) of version `mv` in `context`, from the cache or by evaluating it with the handle's config
    (whose data and eval settings must reproduce `context`: checked, never assumed); (None, why) when that cannot
    be done."""
    cfg = registry.cfg
    want = context_hash(context)
    cached = read_measurement(cache_path(registry, mv, want), want)
    if cached is not None:
        return cached, None
    data = registry.data_version()
    current, measured_on = (data or {}).get("data_version"), str(context.get("data_version"))
    if current is None:
        return None, f"no prepared data at {cfg.data.prepared_dir!r} to measure it on"
    if current != measured_on:
        # Cheap and the usual case (`ganops promote N` after the data changed): no evaluation to find it out.
        return None, (f"the prepared data ({cfg.data.prepared_dir}) is at version {current[:12]}, the candidate "
                      f"was measured on {measured_on[:12]}")
    try:
        evaluation = evaluate_version(registry, str(mv.version), subdir="champion")
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


def evaluate_version(registry: Registry | Config, version: str, subdir: str) -> Evaluation:
    """Evaluate registered `version` with the handle's config (outputs under {eval.out_dir}/{subdir}, so the
    candidate's files stay) and cache its metrics under the context they were measured in, for the gate
    (measure_version). The gate and the monitor both measure a registered version through here."""
    from gan_core.evaluation.evaluate import evaluate

    registry = Registry.of(registry)
    cfg = registry.cfg
    eval_cfg = cfg.model_copy(deep=True)
    eval_cfg.eval.out_dir = str(Path(cfg.eval.out_dir) / subdir)
    mv = registry.version(version)
    registry.point_fluent_api()  # load_generator("models:/...") reads MLflow's fluent URI
    evaluation = evaluate(eval_cfg, generator=cfg.registry.version_uri(mv.version),
                          data_version_info=registry.data_version())
    path = cache_path(registry, mv, context_hash(evaluation.context))
    try:
        write_measurement(path, evaluation.context, evaluation.metrics, source=f"{subdir} evaluation")
    except OSError as e:  # an unwritable cache costs a re-evaluation next time, not this result
        log.warning("could not cache the measurement of version %s at %s: %s", mv.version, path, e)
    return evaluation


def cache_path(registry: Registry, mv: ModelVersion, hash_: str) -> Path:
    return champion_cache_path(registry.cfg.eval.cache_dir, mv.name, str(mv.version), run_id_of(mv), hash_)
