"""What the registry says in words: the registered model's description (what it is, how to pull the champion) and
each version's, rebuilt from its tags whenever they change (gate decision and reasons, promotion, rollback,
metrics, evaluation context, lineage). The MLflow UI shows a version's description at the top of its page, where
the tags table shows only a few of the ~35 tags.

    set_tags(registry, "3", {"gate.decision": "passed", ...})   # tags, then the description that follows them
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow.entities.model_registry import ModelVersion

from flows.registry.handle import METRIC_PREFIX, VERSIONS_EXPERIMENT_SUFFIX, Registry
from gan_core.config import Config
from gan_core.config.catalogue import TASKS, TRANSLATION, family_info
from gan_core.evaluation.context import describe, recorded_context


def model_description(cfg: Config) -> str:
    """The registered model's description (markdown): what it is and how to pull the champion."""
    name, alias, uri = cfg.registry.model_name, cfg.registry.champion_alias, cfg.registry.model_uri()
    task = TASKS[family_info(cfg.model.arch).task]
    if task.name == TRANSLATION:
        what = f"Image-to-image translator ({cfg.data.source} ↔ {cfg.data.target}, {cfg.model.arch}) trained by ganops"
    else:
        what = "GAN generator trained by ganops"
    use = (f"    python -c \"import gan_core; {task.load_example.format(uri=uri)}\"\n"
           f"    {task.command_example.format(uri=uri)}\n")
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


def describe_model(registry: Registry) -> None:
    """Give the registered model model_description's text, only when it has none (one edited in the UI stays)."""
    client = registry.client()
    if not client.get_registered_model(registry.name).description:
        client.update_registered_model(registry.name, description=model_description(registry.cfg))


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


def update_description(registry: Registry, version: str) -> ModelVersion:
    """Rewrite a version's description from its current tags; return the updated version."""
    client, name = registry.client(), registry.name
    mv = client.get_model_version(name, version)
    client.update_model_version(name, version, description=version_description(mv.tags))
    return client.get_model_version(name, version)


def set_tags(registry: Registry, version: str, tags: Mapping[str, Any]) -> None:
    """Set the tags, then rebuild the version's description from them (the description follows the tags)."""
    client = registry.client()
    for key, value in tags.items():
        client.set_model_version_tag(registry.name, version, key, str(value))
    update_description(registry, str(version))
