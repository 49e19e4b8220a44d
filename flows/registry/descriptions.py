"""What the registry says in words: the registered model's description (what it is, how to pull the champion), each
version's, and the outcome line of the run that trained it — rebuilt from the tags whenever they change (gate
decision and reasons, promotion, rollback), with the lineage read from the training run's tags.

    set_tags(registry, "3", {"gate.decision": "passed", ...})   # tags, then the descriptions that follow them

A version carries few tags (VERSION_TAGS, the gate's and the promotion's: what code reads and people filter by);
everything else a version's page should say is its description: a plain first sentence (the versions table shows
the description as raw text), then the gate's reasons, the metrics (rounded), the evaluation context and the
lineage, in markdown. The run's description (MLflow renders it as markdown, links included) gets the same outcome
as a paragraph, with a link to the version's page when the MLflow UI's address is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flows.registry.handle import VERSIONS_EXPERIMENT_SUFFIX, Registry, run_id_of, tags_metrics
from gan_core.config import Config
from gan_core.config.catalogue import TASKS, TRANSLATION, family_info
from gan_core.config.metrics import METRICS
from gan_core.evaluation.context import describe, recorded_context
from gan_core.redact import redact
from gan_core.tracking.runs import run_note
from gan_core.tracking.store import NOTE_TAG, mlflow_ui_url

OUTCOME_MARK = "**Outcome:"
"""How the outcome paragraph of a run's description starts (it is replaced, not repeated, when it changes)."""
RUN_LINEAGE = (("data_source", "data source"), ("config_hash", "config"), ("training_hash", "training"),
               ("eval_hash", "evaluation settings"), ("code_hash", "gan_core source"), ("device", "device"),
               ("torch_version", "torch"), ("recipe", "recipe"), ("sweep.study", "sweep study"),
               ("sweep.trial", "trial"))
"""Lineage that the training run's tags hold and the version's description quotes (label for each)."""


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
        "A version's description says what the gate decided and why, its metrics, evaluation context and lineage; "
        "its tags hold what is filtered by (data_version, git_commit, gate.decision, promotion.decision, the "
        f"evaluation context and the metrics as JSON). The trainings are the runs of experiment "
        f"`{cfg.registry.experiment_name}`; the run `{name} champions` in experiment "
        f"`{cfg.registry.experiment_name}{VERSIONS_EXPERIMENT_SUFFIX}` charts each promoted version's metrics "
        "(step = version number)."
    )


def describe_model(registry: Registry) -> None:
    """Give the registered model model_description's text, only when it has none (one edited in the UI stays)."""
    client = registry.client()
    if not client.get_registered_model(registry.name).description:
        client.update_registered_model(registry.name, description=model_description(registry.cfg))


# ----------------------------------------------------------------------------- a version, in words
def outcome(tags: Mapping[str, str], champion_alias: str = "champion", markdown: bool = True) -> str:
    """What became of a version, in a few words, from its tags: ``promoted to `@champion` (replaced v2)``,
    `rejected by the gate`, ... The alias is code in markdown (MLflow's markdown turns a bare @name into a GitHub
    link), its bare name in plain text (`promoted to champion`)."""
    alias = f"`@{champion_alias}`" if markdown else champion_alias
    demoted, restored_at = tags.get("rollback.demoted_at"), tags.get("rollback.restored_at")
    if demoted and not (restored_at and restored_at > demoted):
        return f"rolled back: v{tags.get('rollback.replaced_by', '?')} is {alias} again"
    promotion, gate = tags.get("promotion.decision"), tags.get("gate.decision")
    replaced = tags.get("promotion.previous_champion")
    over = f" (replaced v{replaced})" if replaced and replaced != "none" else ""
    restored = " (restored by a rollback)" if restored_at else ""
    approval = tags.get("approval.status")
    if promotion == "forced":
        return f"forced to {alias} past the gate{over}{restored}"
    if promotion == "promoted":
        approved = " after a person approved it" if approval == "approved" else ""
        return f"promoted to {alias}{over}{approved}{restored}"
    if gate == "failed":
        return "rejected by the gate"
    if promotion == "rejected":
        return APPROVAL_OUTCOMES.get(approval or "", "rejected by the gate") if tags.get(
            "promotion.reject_reason") else "rejected by the gate"
    if approval == "waiting":
        return "passed the gate; waiting for approval"
    if gate == "passed":
        return "passed the gate"
    return "registered; the gate has not been applied yet"


APPROVAL_OUTCOMES = {
    "rejected": "rejected by a person",
    "timed_out": "rejected: nobody answered in time",
    "approved": "rejected: the champion changed while it waited for approval",
}
"""A version that passed the gate and was rejected after all, by what became of its approval (approval.status)."""


def _round(value: float) -> str:
    return f"{value:.4g}"


def headline(tags: Mapping[str, str], primary_metric: str | None = None, champion_alias: str = "champion") -> str:
    """The description's plain first sentence (the versions table shows its first characters as raw text): the
    outcome, the first failed check of a rejected version, and the primary metric, rounded."""
    text = outcome(tags, champion_alias, markdown=False)
    failed = [r for r in tags.get("gate.reasons", "").splitlines() if r.endswith(": fail")]
    if text == "rejected by the gate" and failed:
        text += f" ({failed[0].removesuffix(': fail').split(' (')[0]})"  # the check, without its explanation
    metrics = tags_metrics(tags)
    if primary_metric and primary_metric in metrics:
        text += f"; {primary_metric} {_round(metrics[primary_metric])}"
    return text[0].upper() + text[1:] + "."


def version_description(tags: Mapping[str, str], run_tags: Mapping[str, str] | None = None,
                        primary_metric: str | None = None, champion_alias: str = "champion") -> str:
    """A version's description, rebuilt from its tags (and its training run's, for the lineage): a plain headline,
    then in markdown the gate's reasons, the promotion or rollback, the metrics rounded to 4 digits with their
    feature space, the evaluation context and the lineage."""
    run_tags = run_tags or {}
    lines = [headline(tags, primary_metric, champion_alias), ""]
    gate_decision = tags.get("gate.decision")
    lines.append(f"**Gate: {gate_decision}** ({tags.get('gate.checked_at', '?')})" if gate_decision
                 else "**Gate: not applied yet**")
    lines += [f"- {reason}" for reason in tags.get("gate.reasons", "").splitlines() if reason]
    promotion = tags.get("promotion.decision")
    if promotion:
        lines += ["", f"**Promotion: {promotion}** ({tags.get('promotion.at', '?')})"]
        previous = tags.get("promotion.previous_champion")
        if previous and previous != "none":
            lines.append(f"- replaced champion v{previous}")
        if tags.get("promotion.force_reason"):
            lines.append(f"- forced past the gate: {tags['promotion.force_reason']}")
        if tags.get("promotion.reject_reason"):
            lines.append(f"- {tags['promotion.reject_reason']}")
    approval = tags.get("approval.status")
    if approval:
        lines += ["", f"**Approval: {approval.replace('_', ' ')}** ({tags.get('approval.at', '?')})"]
        if tags.get("approval.reason"):
            lines.append(f"- reason: {tags['approval.reason']}")
        champion = tags.get("approval.champion")
        if champion:
            lines.append(f"- gated against {'champion v' + champion if champion != 'none' else 'no champion'}")
    if tags.get("rollback.demoted_at"):
        lines += ["", f"**Rolled back** ({tags['rollback.demoted_at']}): v{tags.get('rollback.replaced_by')} "
                  "is champion again"]
    if tags.get("rollback.restored_at"):
        lines += ["", f"**Restored as champion by a rollback** ({tags['rollback.restored_at']})"]
    metrics = tags_metrics(tags)
    if metrics:
        lines += ["", "| metric | value | feature space |", "| --- | --- | --- |"]
        lines += [f"| {k} | {_round(v)} | {METRICS[k].space or '—' if k in METRICS else '?'} |"
                  for k, v in sorted(metrics.items())]
    if recorded_context(tags) is not None:
        lines += ["", f"Evaluation: {describe(recorded_context(tags))}"]
    known = [f"data version `{tags['data_version']}`"] if tags.get("data_version") else []
    if tags.get("git_commit"):
        dirty = " (uncommitted changes)" if tags.get("git_dirty") == "true" else ""
        known.append(f"git commit `{tags['git_commit']}`{dirty}")
    known += [f"{label} `{run_tags[key]}`" for key, label in RUN_LINEAGE if run_tags.get(key)]
    if known:
        lines += ["", "Lineage: " + ", ".join(known)]
    return redact("\n".join(lines))


def version_url(registry: Registry, version: str) -> str | None:
    """The version's page in the MLflow UI, when its address is known (gan_core.tracking.store.mlflow_ui_url)."""
    base = mlflow_ui_url(registry.cfg.registry)
    return f"{base}/#/models/{registry.name}/versions/{version}" if base else None


def run_outcome(registry: Registry, version: str, tags: Mapping[str, str]) -> str:
    """The outcome paragraph of the training run's description: `**Outcome: promoted to @champion** as version 3
    of `ganops-generator` (linked to its page when the UI is known)."""
    what = f"version {version} of `{registry.name}`"
    url = version_url(registry, version)
    return f"{OUTCOME_MARK} {outcome(tags, registry.champion_alias)}** as {f'[{what}]({url})' if url else what}."


def with_outcome(note: str, paragraph: str) -> str:
    """`note` (a run's description) with its outcome paragraph replaced by `paragraph`, placed after the first
    paragraph (what was trained)."""
    parts = [p for p in note.split("\n\n") if p and not p.startswith(OUTCOME_MARK)]
    return run_note(*parts[:1], paragraph, *parts[1:])


def _run(registry: Registry, mv: ModelVersion) -> Run | None:
    run_id = run_id_of(mv)
    if not run_id:
        return None
    try:
        return registry.client().get_run(run_id)
    except MlflowException:  # the run was deleted: the version's own tags still say what they can
        return None


def update_description(registry: Registry, version: str) -> ModelVersion:
    """Rewrite a version's description from its current tags and its run's, and the outcome paragraph of that
    run's description; return the updated version."""
    client, name = registry.client(), registry.name
    mv = client.get_model_version(name, version)
    run = _run(registry, mv)
    run_tags: Mapping[str, Any] = run.data.tags if run is not None else {}
    text = version_description(mv.tags, run_tags, registry.cfg.gate.primary_metric, registry.champion_alias)
    client.update_model_version(name, version, description=text)
    if run is not None:
        note = with_outcome(run_tags.get(NOTE_TAG, ""), run_outcome(registry, str(mv.version), mv.tags))
        client.set_tag(run.info.run_id, NOTE_TAG, note)
    return client.get_model_version(name, version)


def set_tags(registry: Registry, version: str, tags: Mapping[str, Any]) -> None:
    """Set the tags, then rebuild the descriptions that follow them (the version's and its run's outcome)."""
    client = registry.client()
    for key, value in tags.items():
        client.set_model_version_tag(registry.name, version, key, str(value))
    update_description(registry, str(version))
