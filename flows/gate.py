"""The gate policy, pure: may a candidate become champion? No MLflow, no Prefect — numbers and contexts in, a
decision out.

    champion = ChampionMetrics("5", metrics={...}, context_hash="1a2b...")   # flows.registry gathers these
    decision = decide(cfg.gate, version="7", metrics={...}, run=("3f2a...", "FINISHED"),
                      champion=champion, context_hash="1a2b...")
    decision.passed                   # every check passed
    [c.reason for c in decision.checks]   # 'fid_lenet = 58.1 <= max 100: pass', ...

Checks, in order: the training run did not fail; every threshold of gate.thresholds (a missing or non-finite
metric fails: the gate never skips one); the candidate beats the champion on gate.primary_metric, in that metric's
direction (gan_core.config.metrics.METRICS), by at least gate.min_improvement.

Like with like. A metric's value depends on its evaluation context (gan_core.evaluation.context: data version, feature
extractor weights, sample count, seed, ...), so the champion check compares only numbers measured in the same
context: the champion's recorded numbers when its context is the candidate's, else the champion re-measured in
the candidate's context (flows.registry does that; the reason quotes both values and both contexts). When no
same-context number exists (the candidate records no context, or the champion could not be re-evaluated), the
check is skipped with a note saying why and passes: the decision rests on the thresholds alone, never on a
cross-context comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gan_core.config import GateConfig
from gan_core.config.metrics import better
from gan_core.evaluation.context import short

FAILED_RUN_STATUSES = ("FAILED", "KILLED")


@dataclass(frozen=True)
class Check:
    name: str  # "run", the metric a threshold bounds, or "champion"
    passed: bool
    reason: str
    skipped: bool = False  # passed because it could not be applied (said in the reason), not because it held

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "reason": self.reason, "skipped": self.skipped}


@dataclass(frozen=True)
class ChampionMetrics:
    """The champion as the gate may compare with it.

    metrics: its numbers in `context_hash` (None: no recorded context); re-measured in the candidate's context
        when `recorded` is set, which then holds the numbers recorded at its registration (in
        `recorded_context_hash`), for the reasons and reports.
    unavailable: why the champion has no numbers in the candidate's context (it could not be re-evaluated).
    """

    version: str
    metrics: Mapping[str, float]
    context_hash: str | None
    recorded: Mapping[str, float] | None = None
    recorded_context_hash: str | None = None
    unavailable: str | None = None

    @property
    def remeasured(self) -> bool:
        return self.recorded is not None

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "metrics": dict(self.metrics), "context_hash": self.context_hash,
                "remeasured": self.remeasured, "recorded": dict(self.recorded or {}),
                "recorded_context_hash": self.recorded_context_hash, "unavailable": self.unavailable}


@dataclass(frozen=True)
class Decision:
    checks: tuple[Check, ...]
    champion_metrics: Mapping[str, float]  # what the candidate was compared with ({} when nothing comparable)
    context_hash: str | None = None  # the candidate's evaluation context
    champion: ChampionMetrics | None = None  # the champion's numbers and contexts, for reports

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [c.as_dict() for c in self.checks],
                "champion_metrics": dict(self.champion_metrics), "context_hash": self.context_hash,
                "champion_comparison": self.champion.as_dict() if self.champion else None}

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.checks]


def decide(
    gate: GateConfig,
    version: str,
    metrics: Mapping[str, float],
    run: tuple[str, str] | None,
    champion: ChampionMetrics | None,
    context_hash: str | None,
) -> Decision:
    """The gate on candidate `version` (its metrics, measured in `context_hash`; `run` = its training run's (id,
    status)) against `champion`."""
    checks = []
    if run is not None:
        run_id, status = run
        ok = status not in FAILED_RUN_STATUSES
        checks.append(Check("run", ok, f"run {run_id} status {status}: {_word(ok)}"))
    checks += threshold_checks(metrics, gate)
    if champion is not None and champion.version == version:
        checks.append(Check("champion", True, f"v{version} is already the champion: pass"))
    else:
        checks.append(champion_check(metrics, champion, gate, context_hash, version))
    compared = comparable(champion, context_hash)
    return Decision(tuple(checks), dict(champion.metrics) if champion and compared else {}, context_hash, champion)


def comparable(champion: ChampionMetrics | None, context_hash: str | None) -> bool:
    """Were the champion's numbers measured in the candidate's context (both known and equal)?"""
    return (champion is not None and champion.unavailable is None and context_hash is not None
            and champion.context_hash == context_hash)


def threshold_checks(metrics: Mapping[str, float], gate: GateConfig) -> list[Check]:
    """One check per configured bound; a missing or non-finite metric fails (the gate never skips one)."""
    checks = []
    for name, bound in sorted(gate.thresholds.items()):
        value = metrics.get(name)
        if not _finite(value):
            checks.append(Check(name, False, f"{name} = {value}: missing or not finite, fails (a metric is never "
                                             "skipped)"))
            continue
        if bound.max is not None:
            ok = value <= bound.max
            checks.append(Check(name, ok, f"{name} = {value:.6g} {'<=' if ok else '>'} max {bound.max:g}: "
                                          f"{_word(ok)}"))
        if bound.min is not None:
            ok = value >= bound.min
            checks.append(Check(name, ok, f"{name} = {value:.6g} {'>=' if ok else '<'} min {bound.min:g}: "
                                          f"{_word(ok)}"))
    return checks


def champion_check(
    metrics: Mapping[str, float],
    champion: ChampionMetrics | None,
    gate: GateConfig,
    context_hash: str | None,
    version: str = "?",
) -> Check:
    """Does the candidate beat the champion on the primary metric, in its direction, by ≥ min_improvement, both
    measured in the candidate's context `context_hash`? Skipped with a note (passes) when no same-context number
    exists."""
    name = gate.primary_metric
    value = metrics.get(name)
    if not _finite(value):
        return Check("champion", False,
                     f"{name} = {value}: missing or not finite, cannot be compared with the champion: fail")
    if champion is None:
        return Check("champion", True, f"no champion yet: {name} = {value:.6g} has nothing to beat: pass")
    if not comparable(champion, context_hash):
        return _skipped(name, value, champion, context_hash, version)
    best = champion.metrics.get(name)
    where = _measured(name, champion, context_hash)
    if not _finite(best):
        return Check("champion", True,
                     f"champion v{champion.version} has no finite {name} ({best}) {where}: {value:.6g} beats it: pass")
    lower = better(name) == "lower"
    strictly_better = value < best if lower else value > best
    # Relative gain in the metric's direction; a zero champion value makes any strict improvement infinite.
    delta = best - value if lower else value - best
    gain = delta / abs(best) if best != 0 else (math.inf if strictly_better else 0.0)
    ok = strictly_better and gain >= gate.min_improvement
    said = f"{name} {value:.6g} is {compared(value, best, lower)} champion v{champion.version}'s {best:.6g} {where}"
    if strictly_better and gate.min_improvement > 0:
        said += f", {'at least' if ok else 'short of'} the {percent(gate.min_improvement)} gate.min_improvement"
    return Check("champion", ok, f"{said}: {_word(ok)}")


def compared(value: float, best: float, lower: bool) -> str:
    """How `value` stands against `best` as a person says it: '29× worse than', '3.7% worse than', 'not better
    than', '5.2% better than' (`lower`: lower is better). Several times worse reads as a factor (FID only grows)."""
    if value == best:
        return "not better than"
    improved = value < best if lower else value > best
    word = "better" if improved else "worse"
    if best == 0:
        return f"{word} than"
    if lower and not improved and best > 0 and value >= 2 * best:
        ratio = value / best
        return f"{ratio:.0f}× worse than" if ratio >= 10 else f"{ratio:.1f}× worse than"
    return f"{percent(abs(value - best) / abs(best))} {word} than"


def percent(fraction: float) -> str:
    """0.0523 → '5.23%', 0.05 → '5%'; what rounds to nothing → '<0.01%'."""
    return f"{fraction * 100:.3g}%" if fraction * 100 >= 0.01 else "<0.01%"


def _measured(name: str, champion: ChampionMetrics, context_hash: str | None) -> str:
    """Where the champion's number comes from, for the reason: its recorded value when the contexts match, else
    its re-measurement in the candidate's context (with the recorded value and context beside it)."""
    if not champion.remeasured:
        return f"(recorded; both in context {short(context_hash)})"
    recorded = (champion.recorded or {}).get(name)
    return (f"(re-measured in the candidate's context {short(context_hash)}; recorded {_number(recorded)} in "
            f"context {short(champion.recorded_context_hash)}, not comparable)")


def _skipped(name: str, value: float, champion: ChampionMetrics, context_hash: str | None, version: str) -> Check:
    """The champion check when no same-context number exists: a note, passing; the thresholds decide alone."""
    theirs = champion.metrics.get(name)
    if context_hash is None:
        why = (f"v{version} records no evaluation context, so its {name} = {value:.6g} cannot be set against "
               f"champion v{champion.version}'s on equal terms")
    else:
        why = (f"champion v{champion.version}'s {name} ({_number(theirs)}) was measured in context "
               f"{short(champion.context_hash)}, the candidate's ({value:.6g}) in {short(context_hash)}")
        if champion.unavailable:
            why += f", and v{champion.version} could not be re-evaluated in it: {champion.unavailable}"
    return Check("champion", True, f"champion comparison skipped: {why}; not compared across contexts, "
                                   "the thresholds alone decide: pass", skipped=True)


def _number(value: float | None) -> str:
    return f"{value:.6g}" if _finite(value) else str(value)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _word(ok: bool) -> str:
    return "pass" if ok else "fail"
