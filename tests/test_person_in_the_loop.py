"""A person in the loop (registry.approval: manual) and the outcome messages (notify), against the session's real
Prefect server on loopback, real MLflow stores and a webhook receiver on loopback.

A retrain waiting for approval is answered through Prefect's API — resume_flow_run with the form's input, the call
the Prefect UI makes — or through `ganops reject`. Every retrain here trains the tiny digits config in a fresh
workspace (no champion yet, so the gate passes); the waiting run runs in a thread while the test answers it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

HOOK_ENV = "GANOPS_TEST_WEBHOOK"


# ----------------------------------------------------------------------------- a webhook receiver on loopback
class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# ----------------------------------------------------------------------------- workspaces and runs
@pytest.fixture
def workspace(prefect_harness: None, retrain_workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh tiny workspace whose retrains notify the webhook in HOOK_ENV; entered (cwd, tracking URI)."""
    import flows.approval

    ws = retrain_workspace(tmp_path / "ws")
    tree = yaml.safe_load(ws.params.read_text())
    tree["notify"] = {"webhook_env": [HOOK_ENV], "timeout": 2}
    ws.params.write_text(yaml.safe_dump(tree, sort_keys=False))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    monkeypatch.chdir(ws.root)
    monkeypatch.setattr(flows.approval, "POLL_S", 0.3)  # the test answers within seconds
    return ws


MANUAL = ["registry.approval=manual"]


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `call` in a thread with this thread's context (the harness's Prefect settings live in a context
    variable); its return value or exception lands in the dict."""
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            box["value"] = context.run(call)
        except BaseException as e:  # noqa: BLE001 (the test re-raises it)
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def start_retrain(ws: Any, overrides: list[str]) -> tuple[threading.Thread, dict[str, Any]]:
    from flows.retrain import retrain

    return in_thread(lambda: retrain(params=str(ws.params), overrides=overrides, return_state=True))


def finished(thread: threading.Thread, box: dict[str, Any], timeout_s: float = 300) -> Any:
    thread.join(timeout_s)
    assert not thread.is_alive(), "the retrain did not finish"
    if "error" in box:
        raise box["error"]
    return box["value"]


def waiting_version(ws: Any, thread: threading.Thread, timeout_s: float = 300) -> tuple[str, str]:
    """(version, flow run id) of the version that waits for approval, once its flow run is paused."""
    from prefect.client.orchestration import get_client

    name = ws.config().registry.model_name
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert thread.is_alive(), "the retrain ended without waiting for approval"
        for mv in ws.client().search_model_versions(f"name = '{name}'"):
            if mv.tags.get("approval.status") == "waiting":
                run_id = mv.tags["approval.flow_run_id"]
                with get_client(sync_client=True) as client:
                    state = client.read_flow_run(run_id).state
                if state is not None and state.is_paused():
                    return str(mv.version), run_id
        time.sleep(0.5)
    raise AssertionError("no version waited for approval")


def version_tags(ws: Any, version: str) -> dict[str, str]:
    return ws.client().get_model_version(ws.config().registry.model_name, version).tags


def champion(ws: Any) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(ws.client().get_model_version_by_alias(ws.config().registry.model_name, "champion").version)
    except MlflowException:
        return None


# ----------------------------------------------------------------------------- approval
@pytest.mark.slow
def test_an_approved_candidate_waits_in_a_named_state_with_the_form_then_takes_the_alias(
    workspace: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    from flows.approval import AWAITING, pause_key
    from flows.cli import main

    monkeypatch.setenv(HOOK_ENV, receiver.url)
    thread, box = start_retrain(workspace, MANUAL)
    version, run_id = waiting_version(workspace, thread)

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        # The form's description, as the UI shows it above the form: what to decide, with the gate's checks.
        form = json.loads(client.read_flow_run_input(run_id, f"{AWAITING.lower()}-{pause_key(version)}-description"))
    assert state.type.value == "PAUSED" and state.name == AWAITING
    assert form.startswith(f"### Approve version {version} of `ganops-generator` as the first champion?")
    assert "**Gate: passed**" in form and "fid_lenet (primary)" in form and "data:image/png;base64," in form
    assert champion(workspace) is None  # nothing moved while it waits
    with pytest.raises(SystemExit):
        main(["models", "--params", str(workspace.params)])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"│ {version} "))
    assert "│ passed │ waiting " in row
    assert version_tags(workspace, version)["approval.champion"] == "none"
    assert len(receiver.messages) == 1 and "waits for approval" in receiver.texts()[0]
    assert f"ganops approve {version}" in receiver.texts()[0]

    resume_flow_run(run_id, run_input={"approve": True, "reason": "grids look right"})  # what the UI's form sends
    final = finished(thread, box)

    assert final.is_completed() and final.name == "Completed"
    assert final.result()["status"] == "promoted"
    assert champion(workspace) == version
    tags = version_tags(workspace, version)
    assert tags["approval.status"] == "approved" and tags["approval.reason"] == "grids look right"
    assert tags["promotion.decision"] == "promoted"
    description = workspace.client().get_model_version("ganops-generator", version).description
    assert description.startswith("Promoted to champion after a person approved it")
    assert "**Approval: approved**" in description and "- reason: grids look right" in description
    # One message per outcome: waiting, then promoted.
    texts = receiver.texts()
    assert len(texts) == 2 and texts[1].startswith(f"ganops-generator v{version} promoted to @champion (fid_lenet ")


@pytest.mark.slow
def test_a_rejection_from_the_terminal_leaves_the_champion_and_records_the_reason(
    workspace: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main
    from flows.retrain import prefect_flow_run_url

    monkeypatch.setenv(HOOK_ENV, receiver.url)
    thread, box = start_retrain(workspace, MANUAL)
    version, run_id = waiting_version(workspace, thread)

    with pytest.raises(SystemExit) as exit_:
        main(["reject", version, "--reason", "samples are blurry", "--params", str(workspace.params)])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"rejected: v{version} of ganops-generator; flow run {run_id} was AwaitingApproval" in out
    final = finished(thread, box)

    assert final.is_completed() and final.name == "Rejected"
    result = final.result()
    assert result["status"] == "rejected" and result["reason"] == "rejected by a person: samples are blurry"
    assert champion(workspace) is None
    tags = version_tags(workspace, version)
    assert tags["approval.status"] == "rejected" and tags["approval.reason"] == "samples are blurry"
    assert tags["promotion.decision"] == "rejected" and tags["gate.decision"] == "passed"
    texts = receiver.texts()
    assert len(texts) == 2 and "waits for approval" in texts[0]
    # The link: the flow run's page (the harness's API has a UI; the MLflow UI's address is not known here).
    assert texts[1] == (f"ganops-generator v{version} rejected, @champion unchanged: rejected by a person: samples "
                        f"are blurry {prefect_flow_run_url(run_id)}")

    # Answering again is a user error naming what became of it.
    with pytest.raises(SystemExit) as again:
        main(["approve", version, "--params", str(workspace.params)])
    assert again.value.code == 2
    assert "is not waiting for approval: it was rejected already" in capsys.readouterr().err


@pytest.mark.slow
def test_no_answer_within_the_timeout_is_a_rejection_with_that_reason(
    workspace: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    from flows.retrain import retrain

    monkeypatch.setenv(HOOK_ENV, receiver.url)
    state = retrain(params=str(workspace.params), overrides=[*MANUAL, "registry.approval_timeout=2"],
                    return_state=True)

    assert state.is_completed() and state.name == "Rejected"
    result = state.result()
    assert result["reason"] == "no answer within 2 s (registry.approval_timeout)"
    version = result["version"]
    tags = version_tags(workspace, version)
    assert tags["approval.status"] == "timed_out" and tags["promotion.decision"] == "rejected"
    assert champion(workspace) is None
    with get_client(sync_client=True) as client:
        history = client.read_flow_run_states(state.state_details.flow_run_id)
    assert [s.name for s in history if s.type.value == "PAUSED"] == ["AwaitingApproval"]
    texts = receiver.texts()
    assert len(texts) == 2 and "waits for approval" in texts[0] and "no answer within 2 s" in texts[1]


@pytest.mark.slow
def test_a_late_approval_never_overwrites_a_champion_promoted_meanwhile(
    workspace: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.flow_runs import resume_flow_run

    from flows.retrain import retrain

    monkeypatch.setenv(HOOK_ENV, receiver.url)
    thread, box = start_retrain(workspace, MANUAL)
    waiting, run_id = waiting_version(workspace, thread)

    # Meanwhile a retrain without approval (another seed: another candidate) promotes itself.
    other = retrain(params=str(workspace.params), overrides=["train.seed=1"])
    assert other["status"] == "promoted" and champion(workspace) == other["version"] != waiting

    resume_flow_run(run_id, run_input={"approve": True, "reason": "looked fine an hour ago"})
    final = finished(thread, box)

    assert final.name == "Rejected"
    reason = final.result()["reason"]
    assert reason.startswith(f"champion changed while waiting for approval (was no champion, now v{other['version']})")
    assert champion(workspace) == other["version"]
    tags = version_tags(workspace, waiting)
    assert tags["approval.status"] == "approved" and tags["promotion.decision"] == "rejected"
    assert tags["promotion.reject_reason"] == reason
    texts = receiver.texts()
    assert len(texts) == 3, texts
    assert "waits for approval" in texts[0]
    assert texts[1].startswith(f"ganops-generator v{other['version']} promoted to @champion")
    assert texts[2].startswith(f"ganops-generator v{waiting} rejected, @champion unchanged: champion changed")


@pytest.mark.slow
def test_a_sweep_with_approval_on_waits_for_a_person_too(
    workspace: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep's best trial takes the same road as a retrain's candidate: gate, wait, answer."""
    from prefect.flow_runs import resume_flow_run

    from flows.sweep import sweep

    monkeypatch.setenv(HOOK_ENV, receiver.url)
    space = {"trials": 2, "pruning": {"enabled": False}, "params": {"train.batch_size": {"choices": [8, 16]}}}
    (workspace.root / "space.yaml").write_text(yaml.safe_dump(space))
    thread, box = in_thread(lambda: sweep(space="space.yaml", params=str(workspace.params), overrides=MANUAL,
                                          storage=f"sqlite:///{workspace.root / 'optuna.db'}", return_state=True))
    version, run_id = waiting_version(workspace, thread)
    assert champion(workspace) is None

    resume_flow_run(run_id, run_input={"approve": False, "reason": "not from a sweep"})
    final = finished(thread, box)

    assert final.name == "Rejected"
    assert final.result()["reason"] == "rejected by a person: not from a sweep"
    assert champion(workspace) is None
    texts = receiver.texts()
    assert len(texts) == 2 and "waits for approval" in texts[0] and "not from a sweep" in texts[1]


def test_approval_needs_a_prefect_server_a_person_can_reach(
    retrain_workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without PREFECT_API_URL the flow would wait on Prefect's temporary API, which no one else can reach."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    ws = retrain_workspace(tmp_path / "ws")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    monkeypatch.chdir(ws.root)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(SystemExit) as exit_:
            main(["approve", "1", "--params", str(ws.params)])
        assert exit_.value.code == 2
        assert "`ganops approve` answers a run on a Prefect server: export PREFECT_API_URL" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exit_:
            main(["retrain", "--params", str(ws.params), *MANUAL])
        assert exit_.value.code == 2
        assert "registry.approval=manual needs a Prefect server where a person can answer" in capsys.readouterr().err


# ----------------------------------------------------------------------------- notifications
@pytest.mark.slow
def test_a_failed_retrain_sends_one_message_with_the_step_and_the_error(
    workspace: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.retrain import retrain

    monkeypatch.setenv(HOOK_ENV, receiver.url)
    state = retrain(params=str(workspace.params), overrides=["data.source=folder:/nonexistent/ganops-images"],
                    return_state=True)

    assert state.is_failed()
    texts = receiver.texts()
    assert len(texts) == 1
    assert texts[0].startswith("retrain of ganops-generator failed, no alias was moved: step 'version_data' failed:")
    assert "/nonexistent/ganops-images" in texts[0]


@pytest.mark.slow
def test_an_unreachable_target_is_one_warning_line_and_the_retrain_still_promotes(
    workspace: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.retrain import retrain

    tree = yaml.safe_load(workspace.params.read_text())
    tree["notify"]["webhook_env"] = ["GANOPS_TEST_DEAD_WEBHOOK", HOOK_ENV]
    workspace.params.write_text(yaml.safe_dump(tree, sort_keys=False))
    dead = closed_port_url() + "?token=s3cret"
    monkeypatch.setenv("GANOPS_TEST_DEAD_WEBHOOK", dead)
    monkeypatch.setenv(HOOK_ENV, receiver.url)
    caplog.set_level(logging.WARNING)

    result = retrain(params=str(workspace.params))

    assert result["status"] == "promoted"
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("notify:")]
    assert warnings == ["notify: the webhook in GANOPS_TEST_DEAD_WEBHOOK did not take the message (ConnectError)"]
    assert "s3cret" not in caplog.text
    # The other target still got its one message.
    assert len(receiver.texts()) == 1 and " promoted to @champion" in receiver.texts()[0]


def test_a_prefect_notification_block_gets_the_message(
    prefect_harness: None, receiver: Receiver
) -> None:
    """The block path, with Prefect's own Custom Webhook block pointed at the loopback receiver."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from flows.notify import notify
    from gan_core.config.schema import NotifyConfig

    CustomWebhookNotificationBlock(name="ganops", url=receiver.url, json_data={"text": "{{subject}}: {{body}}"}).save(
        "ganops-test-hook", overwrite=True)
    sent = notify(NotifyConfig(blocks=["custom-webhook/ganops-test-hook"]), "rejected", "v3 rejected at http://u:p@h/x")

    assert sent == 1
    assert receiver.texts() == ["ganops: rejected: v3 rejected at http://h/x"]  # credentials redacted


def test_a_missing_block_or_unset_variable_is_a_warning_never_an_error(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.notify import notify
    from gan_core.config.schema import NotifyConfig

    monkeypatch.delenv("GANOPS_TEST_UNSET_HOOK", raising=False)
    caplog.set_level(logging.WARNING)
    sent = notify(NotifyConfig(webhook_env=["GANOPS_TEST_UNSET_HOOK"], blocks=["custom-webhook/not-there"]),
                  "failed", "x")
    assert sent == 0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "GANOPS_TEST_UNSET_HOOK (notify.webhook_env) is not set" in lines[0]
    assert lines[1].startswith("notify: Prefect block custom-webhook/not-there did not send the message")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("notify.webhook_env", "[https://hooks.slack.com/services/T0/B0/XYZ]", "webhook_env"),
        ("notify.blocks", "[ganops-alerts]", "blocks"),
        ("registry.approval", "auto", "registry.approval"),
        ("registry.approval_timeout", "0", "registry.approval_timeout"),
    ],
)
def test_bad_approval_and_notify_settings_fail_at_load_naming_the_key(key: str, value: str, message: str) -> None:
    """A webhook URL in params.yaml is refused: only the name of the variable that holds it goes there."""
    from gan_core.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}={value}"])
    assert message in str(e.value)
    if key == "notify.webhook_env":
        assert "XYZ" not in str(e.value)  # the URL written there is a secret: not quoted back


# ----------------------------------------------------------------------------- a deployment's run is suspended
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_deployed_run_is_suspended_freeing_its_process_and_resumes_without_training_again(
    workspace: Any, receiver: Receiver, tmp_path: Path
) -> None:
    """`ganops schedule` serves the flow (limit 1); a run of the deployment suspends at the wait — Prefect's
    Suspended state, the runner's slot free — and, answered, is rescheduled, starts again from the top, finds its
    candidate registered and carries out the answer."""
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL
    from processes import stop_process_group

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(repo),
           "MLFLOW_TRACKING_URI": workspace.db_uri, "PREFECT_RUNNER_POLL_FREQUENCY": "1", HOOK_ENV: receiver.url}
    log_path = tmp_path / "runner.log"
    with log_path.open("w") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "schedule", "--cron", "0 0 1 1 *", "--name", "approval-test",
             "--params", str(workspace.params), *MANUAL],
            cwd=workspace.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            def state_of(run_id: Any, want: Callable[[Any], bool], what: str) -> Any:
                deadline = time.monotonic() + 180
                while True:
                    with get_client(sync_client=True) as client:
                        state = client.read_flow_run(run_id).state
                    if state is not None and want(state):
                        return state
                    tail = log_path.read_text()[-3000:]
                    assert runner.poll() is None, f"`ganops schedule` exited: {tail}"
                    assert state is None or state.type.value not in ("FAILED", "CRASHED"), f"{state}: {tail}"
                    assert time.monotonic() < deadline, f"the run was not {what} within 180 s ({state}): {tail}"
                    time.sleep(1)

            deadline = time.monotonic() + 120
            while True:  # the runner registers the deployment when it starts
                try:
                    run = run_deployment("retrain/approval-test", timeout=0)
                    break
                except Exception:
                    assert runner.poll() is None, log_path.read_text()[-3000:]
                    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(2)
            suspended = state_of(run.id, lambda s: s.is_paused(), "suspended")
            assert suspended.name == "Suspended"
            # The runner serves one run at a time (limit 1): a second run can start, so the suspended one holds
            # no slot. Same data and settings: it skips training, the candidate waiting being the newest version.
            second = run_deployment("retrain/approval-test", timeout=0)
            assert state_of(second.id, lambda s: s.is_final(), "finished").name == "Skipped"
            versions = workspace.client().search_model_versions("name = 'ganops-generator'")
            assert [v.tags.get("approval.status") for v in versions] == ["waiting"]
            assert champion(workspace) is None

            resume_flow_run(run.id, run_input={"approve": True, "reason": "ok from the form"})
            done = state_of(run.id, lambda s: s.is_final(), "finished")
        finally:
            stop_process_group(runner)

    assert done.is_completed() and done.name == "Completed", done
    assert champion(workspace) == "1"
    assert version_tags(workspace, "1")["approval.reason"] == "ok from the form"
    # Trained once: the second start found the candidate registered and waiting for this very run.
    experiment = workspace.client().get_experiment_by_name("ganops-generator")
    assert len(workspace.client().search_runs([experiment.experiment_id])) == 1
    texts = receiver.texts()
    assert len(texts) == 2 and "waits for approval" in texts[0] and " promoted to @champion" in texts[1]
