"""The registry side of a person in the loop: what a version waiting for approval records, and what its answer does.

    gated = gate_for_approval(registry, v, flow_run_id)   # the gate; a passing version is tagged as waiting
    answer(registry, v, approve=True, reason="looks good")     # promote over the champion it was gated against
    answer(registry, v, approve=False, reason="grid is blurry")     # reject; nothing moves
    time_out(registry, v, timeout_s=86400)                           # nobody answered: rejected with that reason
    waiting_run(registry, v)                                         # the flow run that waits for version v

The Prefect side (the form, the wait, resuming the run) is flows.approval. The wait holds no promotion lock: the
gate is applied under it, the alias is moved under it, and in between a person takes their time. So the approval
re-checks, under the lock, that the champion is still the one the candidate was gated against (promote's
`expect_champion`); if another retrain promoted meanwhile, the late approval is a rejection, never an overwrite.

Tags (few; the version's description says the rest, flows.registry.descriptions):
    approval.status = waiting | approved | rejected | timed_out, approval.flow_run_id (the waiting Prefect run),
    approval.champion (the champion at the gate, or "none"), approval.at (when it started waiting, then when answered),
    approval.reason (the person's words, or the timeout)
"""

from __future__ import annotations

from typing import Any

from flows.registry.descriptions import set_tags
from flows.registry.handle import Registry, now
from flows.registry.promotion import gate, promote, reject
from gan_core.errors import UserError

STATUS_TAG = "approval.status"
FLOW_RUN_TAG = "approval.flow_run_id"
CHAMPION_TAG = "approval.champion"
NO_CHAMPION = "none"


def gate_for_approval(registry: Registry, version: str, flow_run_id: str) -> dict[str, Any]:
    """Apply the gate (under the promotion lock, as `ganops promote` would) without moving @champion. A failing
    version is rejected as by promote(); a passing one is tagged as waiting for the person answering flow run
    `flow_run_id`, with the champion it was compared with. Returns gate()'s result plus "promoted": False and
    "decision" (rejected | waiting)."""
    result = gate(registry, version)
    if not result["passed"]:
        set_tags(registry, version, {"promotion.decision": "rejected", "promotion.at": now()})
        return {**result, "promoted": False, "decision": "rejected"}
    set_tags(registry, version, {STATUS_TAG: "waiting", FLOW_RUN_TAG: flow_run_id,
                                 CHAMPION_TAG: result["champion"] or NO_CHAMPION, "approval.at": now()})
    return {**result, "promoted": False, "decision": "waiting"}


def answer(registry: Registry, version: str, approve: bool, reason: str) -> dict[str, Any]:
    """Carry out a person's answer for a waiting version. Approve: promote() over the champion it was gated against
    (nothing moves, and the version is rejected, when the champion changed meanwhile); reject: no alias moves.
    The answer and its reason are recorded on the version either way. Returns promote()'s result (a rejection:
    "promoted": False, "reject_reason")."""
    mv = registry.version(version)
    at_gate = mv.tags.get(CHAMPION_TAG)
    expected = None if at_gate in (None, NO_CHAMPION) else at_gate
    reason = reason.strip()
    set_tags(registry, version, {STATUS_TAG: "approved" if approve else "rejected", "approval.at": now(),
                                 "approval.reason": reason or "(no reason given)"})
    if approve:
        return promote(registry, version, expect_champion=expected)
    why = f"rejected by a person: {reason}" if reason else "rejected by a person"
    reject(registry, version, why)
    return {"version": str(version), "promoted": False, "decision": "rejected", "reject_reason": why}


def time_out(registry: Registry, version: str, timeout_s: float) -> dict[str, Any]:
    """Nobody answered within `timeout_s`: the version is rejected with that reason, and nothing moves."""
    why = f"no answer within {timeout_s:g} s (registry.approval_timeout)"
    set_tags(registry, version, {STATUS_TAG: "timed_out", "approval.at": now(), "approval.reason": why})
    reject(registry, version, why)
    return {"version": str(version), "promoted": False, "decision": "rejected", "reject_reason": why}


def waiting_run(registry: Registry, version: str) -> str:
    """The id of the Prefect flow run waiting for an answer about `version`; a UserError when none is."""
    mv = registry.version(version)
    status = mv.tags.get(STATUS_TAG)
    if status != "waiting":
        what = f"was {status.replace('_', ' ')} already" if status else "never waited for approval"
        raise UserError(f"version {version} of {registry.name!r} is not waiting for approval: it {what} "
                        "(`ganops models` lists the versions)")
    return mv.tags[FLOW_RUN_TAG]
