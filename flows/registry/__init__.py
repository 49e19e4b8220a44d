"""The MLflow registry side of promotion: register candidates, apply the gate (the pure policy is flows.gate) and
record its decision, move the champion alias under a lock, roll back.

    registry = Registry(cfg)       # one handle per command or flow: store, names, champion, versions, the lock
    v = register_candidate(registry, model_uri, run_id=run_id, metrics=metrics, tags=lineage_tags)["version"]
    decision = gate(registry, v)   # thresholds + beat the champion; tags the version; passing → @challenger
    promote(registry, v)           # under the promotion lock: re-check against the current champion, move @champion
    promote(registry, v, force=True, reason="hotfix: ...")   # skips the gate, records why
    rollback(registry)             # @champion back to the version it replaced

One module per job:
    handle        the Registry handle: tracking URI, client, model names, champion, versions, the data version
    lock          the promotion lock (a lock file, or a Prefect global concurrency limit for a tracking server)
    descriptions  the registered model's and each version's description, and the outcome in its run's, rebuilt
                  from the tags
    versions      register a candidate, list the versions, the newest and the champion, the champions' metrics
    promotion     gate, promote, rollback: every alias move with its lock, tags and descriptions
    measure       the champion re-measured in a candidate's evaluation context (like with like)

The operations take the handle; a Config is accepted too (a handle for that one call: scripts, tests).
"""

from flows.registry.descriptions import model_description, version_description
from flows.registry.handle import METRIC_PREFIX, METRICS_TAG, VERSIONS_EXPERIMENT_SUFFIX, Registry, version_metrics
from flows.registry.lock import LOCK_LEASE_S, LOCK_TIMEOUT_S, promotion_lock, shared_promotion_lock
from flows.registry.measure import champion_in_context, evaluate_version, measure_version
from flows.registry.promotion import HISTORY_TAG, check_promotion_args, gate, promote, reject, rollback
from flows.registry.versions import (
    CHAMPIONS_RUN_TAG,
    VERSION_TAGS,
    champion,
    latest_version,
    list_versions,
    log_champion_metrics,
    register_candidate,
    why_no_alias,
)

__all__ = [
    "HISTORY_TAG",
    "LOCK_LEASE_S",
    "LOCK_TIMEOUT_S",
    "CHAMPIONS_RUN_TAG",
    "METRICS_TAG",
    "METRIC_PREFIX",
    "VERSIONS_EXPERIMENT_SUFFIX",
    "VERSION_TAGS",
    "Registry",
    "champion",
    "champion_in_context",
    "check_promotion_args",
    "evaluate_version",
    "gate",
    "latest_version",
    "list_versions",
    "log_champion_metrics",
    "measure_version",
    "model_description",
    "promote",
    "promotion_lock",
    "register_candidate",
    "reject",
    "rollback",
    "shared_promotion_lock",
    "version_description",
    "version_metrics",
    "why_no_alias",
]
