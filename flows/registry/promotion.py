"""Gate and promotion: apply the gate (the pure policy is flows.gate) and record its decision, move the champion
alias under the promotion lock, roll back. Every alias move, its lock and the tags and descriptions that explain it
live here together, so no path moves an alias without them.

    decision = gate(registry, v)       # thresholds + beat the champion; tags the version; passing → @challenger
    promote(registry, v)               # under the promotion lock: re-check against the current champion, move @champion
    promote(registry, v, force=True, reason="hotfix: ...")   # skips the gate, records why
    promote(registry, v, expect_champion="2")   # an approved candidate: only over the champion it was gated against
    reject(registry, v, "not this one: ...")    # a person (or a timeout) said no; nothing moves
    rollback(registry)                 # @champion back to the version it replaced

The tags they leave on a version (few: the versions table shows every tag in every row; the descriptions say the
rest, flows.registry.descriptions):
    gate.decision = passed | failed, gate.reasons = one line per check (thresholds named), gate.checked_at  the gate
    promotion.decision = promoted | forced | rejected, promotion.at, promotion.previous_champion (when one
    was replaced), promotion.force_reason (forced), promotion.reject_reason (rejected other than by the gate:
    a person, a timeout, a champion that changed while it waited)                                        promotion
    rollback.demoted_at / replaced_by, rollback.restored_at / restored_over                               rollback
The registered model's `champion_history` tag (JSON list, oldest first) holds the champions that were replaced,
so `rollback` can restore them in turn. A promoted version's metrics are charted on the model's champions run
(flows.registry.versions.log_champion_metrics).

Concurrency: every alias move happens under one promotion lock (flows.registry.lock), and the comparison with the
champion is redone inside it, so promotions finishing together serialise and the better model ends as champion.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from typing import Any, Literal

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flows.gate import FAILED_RUN_STATUSES, ChampionMetrics, Decision, decide
from flows.registry.descriptions import set_tags
from flows.registry.handle import Registry, check_version_number, is_missing, now, run_id_of, version_metrics
from flows.registry.measure import champion_in_context, measure_champion_ahead
from flows.registry.versions import log_champion_metrics
from gan_core.config import Config
from gan_core.errors import UserError
from gan_core.evaluation.context import context_hash, recorded_context

HISTORY_TAG = "champion_history"
HISTORY_LIMIT = 100
ANY_CHAMPION = object()
"""promote()'s default `expect_champion`: promote over whichever version is champion when the lock is taken."""


def check_promotion_args(version: str | int, force: bool = False, reason: str | None = None) -> None:
    """The arguments of a promotion, checked before any store is opened: a version number, a reason with force."""
    check_version_number(version)
    if force and not (reason and reason.strip()):
        raise UserError("--force needs --reason TEXT saying why the gate is overridden (it is recorded on the version)")


def gate(registry: Registry | Config, version: str | int) -> dict[str, Any]:
    """Apply the gate (run not failed, thresholds, beat the champion) to a version and tag the decision.

    A passing version gets the challenger alias; nothing else moves. Returns
    {"version", "passed", "reasons", "champion"}.
    """
    registry = Registry.of(registry)
    client = registry.client()
    mv = registry.version(version)
    measure_champion_ahead(registry, mv)
    with registry.lock():
        champion = registry.champion_version()
        decision = apply_gate(registry, mv, champion)
        record_gate(registry, mv, decision)
        if decision.passed:
            client.set_registered_model_alias(mv.name, registry.challenger_alias, mv.version)
            if str(mv.version) != champion:  # the champion keeps its champion stage
                move_stage(registry, str(mv.version), "challenger")
    return {"version": str(mv.version), **decision.as_dict(), "champion": champion}


def promote(
    registry: Registry | Config, version: str | int, force: bool = False, reason: str | None = None,
    expect_champion: str | None | object = ANY_CHAMPION,
) -> dict[str, Any]:
    """Move the champion alias to `version` when it passes the gate against the current champion.

    The check is redone under the promotion lock, so of two promotions racing, the better model ends as champion.
    `force=True` skips the gate (never a failed run's) and needs `reason`; both are recorded as tags.
    `expect_champion` (a version, or None for no champion): the champion a person approved the candidate over;
    when another holds the alias by now, nothing moves and the version is rejected with that reason.
    Returns {"version", "promoted", "decision", "reasons", "champion", "previous_champion"}; a rejection other
    than the gate's adds "reject_reason".
    """
    check_promotion_args(version, force, reason)
    registry = Registry.of(registry)
    client = registry.client()
    mv = registry.version(version)
    name, v = mv.name, str(mv.version)
    measure_champion_ahead(registry, mv)
    with registry.lock():
        champion = registry.champion_version()
        decision = apply_gate(registry, mv, champion)
        record_gate(registry, mv, decision)
        passed = decision.passed
        run_id = run_id_of(mv)
        if force and run_id and client.get_run(run_id).info.status in FAILED_RUN_STATUSES:
            raise UserError(f"version {v} comes from run {run_id}, which failed; a failed run is never promoted")
        if champion == v:
            return _result(v, False, "unchanged", decision, champion, None)
        if expect_champion is not ANY_CHAMPION and champion != expect_champion:
            why = (f"champion changed while waiting for approval (was {_named(expect_champion)}, now "
                   f"{_named(champion)}); approve a new candidate instead")
            set_tags(registry, v, {"promotion.decision": "rejected", "promotion.at": now(),
                                   "promotion.reject_reason": why})
            return {**_result(v, False, "rejected", decision, champion, None), "reject_reason": why}
        if not (passed or force):
            set_tags(registry, v, {"promotion.decision": "rejected", "promotion.at": now()})
            return _result(v, False, "rejected", decision, champion, None)
        if passed:
            client.set_registered_model_alias(name, registry.challenger_alias, v)
        client.set_registered_model_alias(name, registry.champion_alias, v)
        # One stage per version: a version that is both challenger and champion is in the champion's stage.
        move_stage(registry, v, "champion")
        if champion is not None:
            set_history(registry, [*history(registry), champion])
        outcome = "promoted" if passed else "forced"
        tags = {"promotion.decision": outcome, "promotion.at": now()}
        if champion is not None:
            tags["promotion.previous_champion"] = champion
        if not passed:
            tags["promotion.force_reason"] = reason.strip()  # type: ignore[union-attr]  # checked above
        set_tags(registry, v, tags)
    # Outside the lock, which charting takes itself (to create the champions run once).
    log_champion_metrics(registry, v, version_metrics(mv))
    return _result(v, True, outcome, decision, v, champion)


def reject(registry: Registry | Config, version: str | int, reason: str) -> None:
    """Record that `version` is not promoted for `reason` (a person said no, nobody answered in time); no alias
    moves, and the gate's own decision stays as it was recorded."""
    registry = Registry.of(registry)
    v = str(registry.version(version).version)
    set_tags(registry, v, {"promotion.decision": "rejected", "promotion.at": now(), "promotion.reject_reason": reason})


def _named(version: object) -> str:
    return f"v{version}" if version is not None else "no champion"


def _result(
    version: str, promoted: bool, outcome: str, decision: Decision, champion: str | None, previous: str | None
) -> dict[str, Any]:
    return {"version": version, "promoted": promoted, "decision": outcome, **decision.as_dict(),
            "champion": champion, "previous_champion": previous}


def rollback(registry: Registry | Config) -> dict[str, Any]:
    """Point the champion alias back at the version it replaced; {"champion", "replaced"}.

    Raises UserError when there is no champion or nothing to roll back to.
    """
    registry = Registry.of(registry)
    client = registry.client()
    registry.require_model()
    name, alias = registry.name, registry.champion_alias
    with registry.lock():
        current = registry.champion_version()
        if current is None:
            raise UserError(f"{name!r} has no @{alias}; nothing to roll back (promote a version first)")
        replaced = history(registry)
        while replaced:
            previous = replaced.pop()
            try:
                client.get_model_version(name, previous)
                break
            except MlflowException as e:
                if not is_missing(e):
                    raise
        else:
            raise UserError(f"@{alias} v{current} of {name!r} replaced no earlier champion; nothing to roll back to")
        client.set_registered_model_alias(name, alias, previous)
        move_stage(registry, previous, "champion")
        set_history(registry, replaced)
        at = now()
        set_tags(registry, current, {"rollback.demoted_at": at, "rollback.replaced_by": previous})
        set_tags(registry, previous, {"rollback.restored_at": at, "rollback.restored_over": current})
    return {"champion": previous, "replaced": current}


# ----------------------------------------------------------------------------- the steps they share
def apply_gate(registry: Registry, mv: ModelVersion, champion: str | None) -> Decision:
    """Gather what the gate reads for one version (its run's status, its metrics and context, the champion's
    metrics in that context) and decide."""
    client = registry.client()
    run_id = run_id_of(mv)
    run = (run_id, client.get_run(run_id).info.status) if run_id else None
    context = recorded_context(mv.tags)
    hash_ = context_hash(context) if context is not None else None
    measured = None
    if champion == str(mv.version):
        measured = ChampionMetrics(champion, version_metrics(mv), hash_)
    elif champion is not None:
        measured = champion_in_context(registry, client.get_model_version(mv.name, champion), context)
    return decide(registry.cfg.gate, str(mv.version), version_metrics(mv), run, measured, hash_)


def move_stage(registry: Registry, version: str, role: Literal["champion", "challenger"]) -> None:
    """With registry.stages set, put `version` in the stage mapped to `role` (champion | challenger), archiving
    the version that held it: the stage follows the alias in the same locked step. No-op when stages are off."""
    stage = registry.cfg.registry.stages.get(role)
    if stage is None:
        return
    _stages_deprecated_once()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # said once per process by _stages_deprecated_once
        registry.client().transition_model_version_stage(registry.name, version, stage,
                                                        archive_existing_versions=True)


@functools.cache
def _stages_deprecated_once() -> None:
    logging.getLogger(__name__).warning(
        "registry.stages is set: ganops also moves MLflow model stages, which MLflow deprecates since 2.9 "
        "(aliases replace them); shown once"
    )


def history(registry: Registry) -> list[str]:
    """The champions that were replaced, oldest first (the registered model's champion_history tag)."""
    raw = registry.client().get_registered_model(registry.name).tags.get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def set_history(registry: Registry, versions: list[str]) -> None:
    registry.client().set_registered_model_tag(registry.name, HISTORY_TAG, json.dumps(versions[-HISTORY_LIMIT:]))


def record_gate(registry: Registry, mv: ModelVersion, decision: Decision) -> None:
    set_tags(
        registry,
        mv.version,
        {
            "gate.decision": "passed" if decision.passed else "failed",
            "gate.reasons": "\n".join(decision.reasons),
            "gate.checked_at": now(),
        },
    )
