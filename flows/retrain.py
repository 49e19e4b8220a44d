"""The retrain flow: version the data, train, evaluate, register, gate and promote — one Prefect flow.

    ganops retrain                                  # params.yaml
    ganops retrain train.steps=200 model.arch=mlp   # dotted overrides, as in `dvc exp run -S`
    ganops retrain recipe=conditional               # a named recipe: configs/recipes/conditional.yaml
    ganops demo                                     # the same flow on the defaults, then how to use the champion

    from flows.retrain import retrain
    result = retrain(params="params.yaml", overrides=["train.steps=200"])
    result["status"]     # "promoted" | "rejected" | "skipped"

The steps are Prefect tasks in flows.tasks, each calling the same function as the CLI (`python -m gan_core ...`)
and the DVC stages; the candidate itself (one MLflow run: train, through torchrun when distributed → evaluate →
log) is flows.candidate's routine, which every sweep trial runs too. flows.dvc_pipeline decides when a run *is* the
repo's DVC pipeline (then the data step is `dvc repro prepare` and the flow `dvc commit`s what it trained);
flows.failures names the step a failure came from, keeps user errors on one line and holds the retry policy. Either
way the data version is gan_core.data.version.data_version, the md5 DVC records for the prepared directory.

Decided once. The config step builds the run's one registry handle (flows.registry.Registry: the store and its
client); the version_data step hashes the data once. Both are handed forward (flows.candidate.RunInputs) to the
extractors, the trainer, the lineage tags, the evaluation, the registration and the gate, which re-derive neither.

Skipping. A candidate is identified by its training identity (gan_core.training.identity: the settings that shape the
weights, the data version, gan_core's source — so uncommitted code edits count, and commits that touch no code do
not) and its evaluation settings. When the newest registered candidate carries the same, nothing is trained: the
flow says so and reports that version. Logging, sampling, checkpoint cadence, paths and device are not part of it;
gate and registry settings are policy, not inputs of the candidate, so they are left out too. Training resumes the
last checkpoint of the same identity, so a run that differs only in evaluation settings trains no step again.

Names, links and outcomes. A flow run is named after what it trains (`retrain-dcgan-nonsaturating-2000steps`) and
ends in a state named after its outcome (flows.states: "Completed", "Rejected", "Skipped"); gan_core's progress
lines reach its log (flows.run_log). Its MLflow run carries `prefect.flow_run_id`, `prefect.flow_run_name` and,
when a Prefect UI is known (PREFECT_UI_URL, set or derived from PREFECT_API_URL), `prefect.flow_run_url`; the run's
description says what was trained, the gate's outcome and version (flows.registry.descriptions) and links the
Prefect flow run. The report links back to the MLflow run (flows.report). No URL is written with credentials
(gan_core.redact).

Like with like. The candidate's metrics are recorded with their evaluation context (gan_core.evaluation.context: data
version, extractor weights, sample count, seed, ...) on its run and version; the promote step's gate compares them
with the champion's only in that context, re-evaluating the champion in it when its own was another (new data
retrains the lenet extractor), and reports both numbers (flows.registry, flows.report).

A person in the loop. With registry.approval: manual the gate does not move @champion: a passing candidate waits
for an answer — the Prefect UI's form or `ganops approve/reject N` — and only an approval promotes it, over the
champion it was gated against (flows.approval for the wait, flows.registry.approval for the tags). A run of a
deployment is suspended while it waits and starts again from the top when answered: find_unchanged finds its
candidate waiting for this very run, and the wait returns the answer. Each outcome — promoted, rejected, waiting,
failed — is one message to the notify targets (flows.notify).

Services. The tracking server is probed in the `config` step, so a dead one fails in seconds, naming the step.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger

from flows.approval import check_approval_possible
from flows.candidate import RunInputs, run_inputs, train_candidate
from flows.dvc_pipeline import dvc_pipeline_applies, dvc_stage_applies, has_default_remote
from flows.failures import RetrainFailed, named_step
from flows.registry import Registry
from flows.run_log import send_library_logs_to_runs
from flows.states import final_state
from flows.tasks import (
    RETRAIN_STEPS,
    carry_out_answer,
    find_unchanged,
    gate_for_approval,
    promote,
    push_data,
    push_outputs,
    record_dvc_stages,
    register,
    train_extractors,
    version_data,
)
from gan_core.config import DEFAULT_PARAMS, Config, load_config, parse_overrides
from gan_core.redact import clean_url
from gan_core.tracking.runs import run_note, training_key, training_summary
from gan_core.tracking.store import NOTE_TAG, check_tracking, run_reference

__all__ = ["retrain", "flow_run_config", "retrain_run_name"]


def flow_run_config() -> Config | None:
    """The config of the current flow run, from its `params`/`overrides` parameters; None when it does not load
    (the flow's own config step then reports why)."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters or {}
    try:
        return load_config(parameters.get("params", str(DEFAULT_PARAMS)), parse_overrides(parameters.get("overrides")))
    except Exception:  # a bad params file or override: named by the flow's config step, not here
        return None


def retrain_run_name() -> str:
    """Prefect flow-run name that says what runs, e.g. `retrain-dcgan-nonsaturating-2000steps` (`retrain` when the
    config does not load)."""
    from gan_core.tracking.runs import training_label

    cfg = flow_run_config()
    return f"retrain-{training_label(cfg)}" if cfg else "retrain"


def prefect_run_tags() -> dict[str, str]:
    """MLflow run tags linking back to the Prefect flow run: its id and name, and its page in the Prefect UI when one
    is known (PREFECT_UI_URL; the ephemeral API has no UI to link to)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if run_id is None:
        return {}
    tags = {"prefect.flow_run_id": str(run_id), "prefect.flow_run_name": str(flow_run.name)}
    url = prefect_flow_run_url(run_id)
    if url:
        tags["prefect.flow_run_url"] = url
    return tags


def prefect_flow_run_url(run_id: Any) -> str | None:
    """The flow run's page in the Prefect UI (`<PREFECT_UI_URL>/runs/flow-run/<id>`, as Prefect prints it), cleaned
    of credentials; None without a UI (the ephemeral API)."""
    from prefect.settings import PREFECT_UI_URL
    from prefect.utilities.urls import url_for

    if not PREFECT_UI_URL.value():
        return None
    url = url_for("flow-run", obj_id=run_id)
    return clean_url(url) if url else None


def prefect_markdown(tags: dict[str, str]) -> str | None:
    """`Prefect flow run: [name](url)` for a run's description, from prefect_run_tags; None without a UI."""
    url = tags.get("prefect.flow_run_url")
    return f"Prefect flow run: [{tags['prefect.flow_run_name']}]({url})" if url else None


@flow(name="retrain", flow_run_name=retrain_run_name, validate_parameters=False)
def retrain(
    params: str = str(DEFAULT_PARAMS), overrides: dict[str, Any] | list[str] | None = None
) -> dict[str, Any]:
    """Data → extractors → train → evaluate → register → gate → promote; skips training when nothing changed.

    Returns {"status": "promoted" | "rejected" | "skipped", "version", "data_version", "metrics", "eval_context",
    "gate", ...}.
    Raises RetrainFailed naming the step that failed.
    """
    from flows.report import publish_failure, publish_report

    logger = get_run_logger()
    send_library_logs_to_runs()  # training progress in the flow-run log
    result: dict[str, Any] = {"params": str(params)}
    cfg: Config | None = None
    registry: Registry | None = None
    try:
        with named_step("config"):
            parsed = parse_overrides(overrides)
            cfg = load_config(params, parsed)
            # The one registry handle of this run: every step below reads and writes the store through it.
            registry = Registry(cfg, check_tracking(cfg.registry, "config", write=True))
            registry.point_fluent_api()
            check_approval_possible(cfg)
        result["model_name"] = cfg.registry.model_name
        with named_step("version_data"):
            use_dvc = dvc_stage_applies(cfg, params, parsed)
            data = version_data(cfg, use_dvc)
        inputs = run_inputs(registry, data)  # hashed once, above: every step below is handed it
        pushes = use_dvc and has_default_remote()  # the DVC pipeline's outputs go to the default remote
        if pushes:
            with named_step("push_data"):
                push_data()
        result.update(data_version=data["data_version"], data=data)
        source = cfg.data.source if cfg.data.target is None else f"{cfg.data.source} ↔ {cfg.data.target}"
        logger.info("data version %s (%s images from %s)", data["data_version"], data["count"], source)

        with named_step("find_unchanged"):
            key = training_key(cfg, data["data_version"])
            previous = find_unchanged(registry, key)
        if previous is not None and waits_in_this_run(previous):
            # A suspended run that was answered starts again from the top (flows.approval): its candidate is
            # registered and gated already, and the wait below now returns the answer.
            result.update(version=previous["version"], run_id=previous.get("run_id"),
                          metrics=previous.get("metrics", {}), gate={"passed": True, "checks": [], "reasons": []})
            return finish(registry, result, ask_a_person(registry, result, resumed=True))
        if previous is not None:
            result.update(skipped(cfg, previous, key))
            _publish(publish_report, registry, result)
            return final_state(result)  # named "Skipped" in Prefect; the caller still gets `result`

        lineage, model_uri = classify_and_train(cfg, inputs, key, result)
        if use_dvc and dvc_pipeline_applies(cfg, params, parsed):
            with named_step("record_dvc_stages"):
                record_dvc_stages()
            if pushes:  # so another clone's `dvc pull` gets every output dvc.lock names
                with named_step("push_outputs"):
                    push_outputs()
        with named_step("register"):
            version = register(registry, model_uri, result["run_id"], result["metrics"], {**lineage, **key},
                               result["eval_context"])
        result["version"] = version["version"]
        outcome = gate_then_promote(registry, result)
        return finish(registry, result, outcome)
    except RetrainFailed as failure:
        logger.error("retrain %s", failure)
        _publish(publish_failure, cfg, result, failure, registry)
        if cfg is not None:
            tell(cfg, "failed", {**result, "error": str(failure)}, prefect_flow_run_url(prefect_run_id()))
        raise


def gate_then_promote(registry: Registry, result: dict[str, Any]) -> dict[str, Any]:
    """The last steps of a retrain or a sweep, for the registered result["version"]: the gate and the promotion
    under one lock (registry.approval: none), or the gate, then a person's answer, then the promotion (manual; a
    resumed suspended run goes straight to the answer). Sets result["gate"]; returns promote()'s result or the
    answer's."""
    version = str(result["version"])
    if registry.cfg.registry.approval != "manual":
        with named_step("promote"):
            # The gate, applied once under the promotion lock against the champion of that moment: a passing
            # candidate takes the alias in the same step, so a faster rival cannot slip in between.
            outcome = promote(registry, version)
        result["gate"] = gate_summary(outcome)
        return outcome
    with named_step("gate"):
        if waits_in_this_run({"tags": registry.version(version).tags}):  # a sweep that resumed registers again
            return ask_a_person(registry, result, resumed=True)
        # The gate under the promotion lock, @champion untouched: a passing candidate waits for a person,
        # without the lock (flows.registry.approval).
        outcome = gate_for_approval(registry, version, str(prefect_run_id()))
    result["gate"] = gate_summary(outcome)
    return ask_a_person(registry, result) if outcome["decision"] == "waiting" else outcome


def gate_summary(outcome: dict[str, Any]) -> dict[str, Any]:
    """What the result and the report keep of the gate's decision."""
    keys = ("passed", "reasons", "checks", "champion_metrics", "context_hash", "champion_comparison", "champion")
    return {k: outcome.get(k) for k in keys}


def finish(registry: Registry, result: dict[str, Any], outcome: dict[str, Any]) -> Any:
    """The end of a run that gated a candidate: its status, the log line, the report, the message, the named
    final state."""
    from flows.registry.descriptions import version_url
    from flows.report import publish_report

    cfg, logger = registry.cfg, get_run_logger()
    version = result["version"]
    promoted = outcome["promoted"]
    result["status"] = "promoted" if promoted else "rejected"
    if outcome.get("reject_reason"):
        result["reason"] = outcome["reject_reason"]
    if promoted:
        logger.info("version %s promoted to @%s", version, cfg.registry.champion_alias)
    else:
        logger.info("version %s rejected: %s", version, result.get("reason") or "; ".join(result["gate"]["reasons"]))
    _publish(publish_report, registry, result)
    message = {**result, "primary_metric": cfg.gate.primary_metric,
               "previous_champion": outcome.get("previous_champion")}
    tell(cfg, result["status"], message, version_url(registry, version) or prefect_flow_run_url(prefect_run_id()))
    return final_state(result)  # named "Rejected" when the candidate was not promoted


def ask_a_person(registry: Registry, result: dict[str, Any], resumed: bool = False) -> dict[str, Any]:
    """registry.approval: manual, after the gate passed: say so, wait for the answer (the Prefect UI's form or
    `ganops approve/reject`; flows.approval) and carry it out. A deployment's run is suspended here (its process
    exits) and reaches this point again, `resumed`, when answered: the wait then returns the answer at once."""
    from flows.approval import wait_for_answer
    from flows.report import approval_markdown

    version = str(result["version"])
    form = ""
    if not resumed:
        get_run_logger().info("version %s passed the gate and waits for approval: answer the form of this flow run, "
                              "or `ganops approve %s` / `ganops reject %s --reason TEXT`", version, version, version)
        with named_step("approval"):
            form = approval_markdown(registry, result)
        tell(registry.cfg, "waiting", result, prefect_flow_run_url(prefect_run_id()))
    answer = wait_for_answer(registry, version, form)  # a suspension is Prefect's signal, not a failed step
    with named_step("promote"):
        return carry_out_answer(registry, version, answer.approve if answer else None, answer.reason if answer else "")


def waits_in_this_run(previous: dict[str, Any]) -> bool:
    """Whether the registered version `previous` waits for an answer to be carried out by this very flow run (a
    suspended run that was answered and started again)."""
    tags = previous.get("tags") or {}
    return tags.get("approval.status") == "waiting" and tags.get("approval.flow_run_id") == str(prefect_run_id())


def prefect_run_id() -> Any:
    from prefect.runtime import flow_run

    return flow_run.id


def tell(cfg: Config, outcome: str, result: dict[str, Any], link: str | None) -> None:
    """One message about the outcome to every notify target (flows.notify): a target that fails is a warning."""
    from flows.notify import notify, outcome_message

    if not (cfg.notify.webhook_env or cfg.notify.blocks):
        return
    text = outcome_message(outcome, result, cfg.registry.model_name, cfg.registry.champion_alias, link)
    try:
        notify(cfg.notify, outcome, text)
    except Exception as e:  # a message is a courtesy: it never fails the retrain
        get_run_logger().warning("notify: could not send the %s message: %s: %s", outcome, type(e).__name__, e)


def skipped(cfg: Config, previous: dict[str, Any], key: dict[str, str]) -> dict[str, Any]:
    """The result of a run that trains nothing: `previous` was trained from the same key and gated."""
    get_run_logger().info(
        "skipping training: version %s of %s was trained from the same data, config and code (%s)",
        previous["version"], cfg.registry.model_name, ", ".join(f"{k}={v}" for k, v in key.items()),
    )
    outcome = previous["tags"]["gate.decision"]
    # Gate settings are not part of the key: after changing them, `ganops promote` re-applies the gate.
    hint = f"; `ganops promote {previous['version']}` re-applies the current gate" if outcome == "failed" else ""
    return {
        "status": "skipped",
        "version": previous["version"],
        "run_id": previous.get("run_id"),
        "metrics": previous.get("metrics", {}),
        "reason": f"data, config and code unchanged since version {previous['version']} (gate {outcome}){hint}",
    }


def classify_and_train(
    cfg: Config, inputs: RunInputs, key: dict[str, str], result: dict[str, Any]
) -> tuple[dict[str, str], str]:
    """Feature extractors, then the candidate (flows.candidate: one MLflow run holding the training, its evaluation
    and the logged model); return its lineage tags and the model's URI. Fills `result` as it goes, so a failure
    report says how far the run got."""
    with named_step("train_extractors"):
        extractors = train_extractors(cfg, inputs.data_version["data_version"])
    result["classifier_accuracy"] = extractors["lenet"].get("holdout_accuracy")

    def started(run: Any) -> None:
        result.update(run_id=run.info.run_id, run_name=run.info.run_name, experiment_id=run.info.experiment_id)

    prefect = prefect_run_tags()
    note = run_note(training_summary(cfg, inputs.data_version["data_version"]), prefect_markdown(prefect))
    candidate = train_candidate(cfg, inputs, key=key, extra_tags={**prefect, NOTE_TAG: note}, started=started,
                                steps=RETRAIN_STEPS)
    get_run_logger().info("MLflow run %s", run_reference(cfg.registry, candidate.run_name, candidate.experiment_id,
                                                         candidate.run_id))
    result.update(metrics=candidate.evaluation.metrics, eval_context=candidate.evaluation.context)
    return candidate.lineage, candidate.model_uri


def _publish(publisher: Any, *args: Any) -> None:
    """Artifacts explain a run; failing to write them must not turn a finished promotion into a failed run."""
    try:
        publisher(*args)
    except Exception as e:  # the Prefect API is unreachable, the registry listing failed, ...
        get_run_logger().warning("could not publish the run report: %s: %s", type(e).__name__, e)


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2, default=str))
