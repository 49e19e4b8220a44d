"""The gate policy, pure: may a candidate become champion? No MLflow, no Prefect — numbers in, a decision out.

    decision = decide(cfg.gate, version="7", metrics={...}, run=("3f2a...", "FINISHED"),
                      champion="5", champion_metrics={...})
    decision.passed                   # every check passed
    [c.reason for c in decision.checks]   # 'fid_lenet = 58.1 <= max 100: pass', ...

Checks, in order: the training run did not fail; every threshold of gate.thresholds (a missing or non-finite
metric fails: the gate never skips one); the candidate beats the champion on gate.primary_metric, in that metric's
direction (gan_core.metrics.METRICS), by at least gate.min_improvement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gan_core.config import GateConfig
from gan_core.metrics import better

FAILED_RUN_STATUSES = ("FAILED", "KILLED")


@dataclass(frozen=True)
class Check:
    name: str  # "run", the metric a threshold bounds, or "champion"
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "reason": self.reason}


@dataclass(frozen=True)
class Decision:
    checks: tuple[Check, ...]
    champion_metrics: Mapping[str, float]  # what the candidate was compared with, for reports

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [c.as_dict() for c in self.checks],
                "champion_metrics": dict(self.champion_metrics)}

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
    champion: str | None,
    champion_metrics: Mapping[str, float],
) -> Decision:
    """The gate on candidate `version` (its metrics; `run` = its training run's (id, status)) against `champion`."""
    checks = []
    if run is not None:
        run_id, status = run
        ok = status not in FAILED_RUN_STATUSES
        checks.append(Check("run", ok, f"run {run_id} status {status}: {_word(ok)}"))
    checks += threshold_checks(metrics, gate)
    if champion == version:
        checks.append(Check("champion", True, f"v{version} is already the champion: pass"))
    else:
        checks.append(champion_check(metrics, champion, champion_metrics, gate))
    return Decision(tuple(checks), dict(champion_metrics))


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
    metrics: Mapping[str, float], champion: str | None, champion_metrics: Mapping[str, float], gate: GateConfig
) -> Check:
    """Does the candidate beat the champion on the primary metric, in its direction, by ≥ min_improvement?"""
    name = gate.primary_metric
    value = metrics.get(name)
    if not _finite(value):
        return Check("champion", False,
                     f"{name} = {value}: missing or not finite, cannot be compared with the champion: fail")
    if champion is None:
        return Check("champion", True, f"no champion yet: {name} = {value:.6g} has nothing to beat: pass")
    best = champion_metrics.get(name)
    if not _finite(best):
        return Check("champion", True,
                     f"champion v{champion} has no finite {name} ({best}): {value:.6g} beats it: pass")
    lower = better(name) == "lower"
    strictly_better = value < best if lower else value > best
    # Relative gain in the metric's direction; a zero champion value makes any strict improvement infinite.
    delta = best - value if lower else value - best
    gain = delta / abs(best) if best != 0 else (math.inf if strictly_better else 0.0)
    ok = strictly_better and gain >= gate.min_improvement
    return Check(
        "champion",
        ok,
        f"{name} = {value:.6g} vs champion v{champion} {best:.6g} ({better(name)} is better): "
        f"improvement {gain:+.2%} {'>=' if ok else 'short of'} {gate.min_improvement:.2%}: {_word(ok)}",
    )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _word(ok: bool) -> str:
    return "pass" if ok else "fail"
