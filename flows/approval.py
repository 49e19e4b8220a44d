"""A person in the loop (registry.approval: manual): the retrain flow run waits for an answer before promotion.

    answer = wait_for_answer(registry, version, form)      # in the flow: ApprovalInput, or None when nobody answered
    send_answer(registry, "3", approve=True, reason="grids look right")   # `ganops approve 3` / `ganops reject 3`

The question is Prefect's own: the flow run waits for typed input (ApprovalInput: approve, reason), which the
Prefect UI shows as a form, with `form` (markdown: the gate's checks, candidate vs champion numbers, both sample
grids, links to the MLflow run and version) above it. Answering the form, or `ganops approve/reject N`, resumes the
run through Prefect's API (resume_flow_run with the input) — the same call either way.

How the run waits depends on how it was started:
- From a deployment (`ganops schedule`, a worker): it is *suspended* (Prefect's suspend_flow_run): the process
  exits and frees its worker slot; the answer reschedules the run, which starts again from the top — the data step
  finds the data unchanged and the registered candidate, so nothing is trained again — and reaches the same wait,
  which now returns the answer. No answer within registry.approval_timeout: Prefect's server fails the run ("never
  resumed"), and the version is recorded as rejected when someone next answers for it (`ganops approve/reject`
  say it timed out). Prefect names this state "Suspended"; its runtime recognises suspension by that name.
- Anything else (`ganops retrain` against a Prefect server): there is no deployment to reschedule, so the run
  *pauses* in its own process, in a state named "AwaitingApproval", and checks for the answer every POLL_S seconds.
  At registry.approval_timeout it resumes itself with no input and ends "Rejected" with the timeout as the reason
  (Prefect's own pause_flow_run would leave the timed-out run "Failed"). A pause keeps the process, not a worker.
Either way no promotion lock is held while waiting (flows.registry.approval).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.input import RunInput
from pydantic import Field

from gan_core.errors import UserError

if TYPE_CHECKING:
    from flows.registry import Registry
    from gan_core.config import Config

AWAITING = "AwaitingApproval"
"""The name of a paused (not suspended) run's state while it waits, in the runs list and for automations."""
POLL_S = 5.0
"""How often a paused run asks Prefect whether it was answered."""


class ApprovalInput(RunInput):
    """The approval form: Prefect's UI renders it from this schema."""

    approve: bool = Field(False, title="Approve", description="On: move @champion to this version. Off: reject it.")
    reason: str = Field("", title="Reason", description="Why; recorded on the MLflow model version.")


def check_approval_possible(cfg: Config) -> None:
    """registry.approval=manual needs a Prefect server (PREFECT_API_URL): Prefect's temporary API lives and dies
    with this process, where no form or `ganops approve` can reach the waiting run."""
    from flows.registry.lock import prefect_server_url

    if cfg.registry.approval == "manual" and prefect_server_url() is None:
        raise UserError("registry.approval=manual needs a Prefect server where a person can answer (`prefect server "
                        "start`, then export PREFECT_API_URL=http://127.0.0.1:4200/api); Prefect's temporary API "
                        "ends with this process")


def pause_key(version: str) -> str:
    """One wait per version: a run that starts again after its suspension reaches the same key, and Prefect hands
    it the answer instead of waiting again."""
    return f"approve-v{version}"


def wait_for_answer(registry: Registry, version: str, form: str) -> ApprovalInput | None:
    """Wait for a person's answer about `version` (see the module's docstring); None when nobody answered within
    registry.approval_timeout. In a deployment's run this first suspends the run (the process exits here)."""
    from prefect.context import FlowRunContext
    from prefect.flow_runs import suspend_flow_run

    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("wait_for_answer runs inside the retrain flow")
    timeout = max(1, math.ceil(registry.cfg.registry.approval_timeout))
    wanted = ApprovalInput.with_initial_data(description=form)
    run = context.flow_run
    if run.deployment_id is not None and run.parent_task_run_id is None:  # Prefect suspends no subflow
        return suspend_flow_run(wait_for_input=wanted, timeout=timeout, key=pause_key(version))
    return _pause(run.id, wanted, pause_key(version), timeout)


def _pause(flow_run_id: UUID, wanted: type[ApprovalInput], key: str, timeout: int) -> ApprovalInput | None:
    """pause_flow_run's steps, with the state named AWAITING and a timeout that ends the wait as a rejection: the
    run proposes a Paused state whose own expiry lies beyond ours, so at our deadline it can still resume itself
    (Prefect fails a run that proposes anything but Running after its pause expired)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.input import keyset_from_paused_state
    from prefect.states import Paused

    state = Paused(name=AWAITING, timeout_seconds=timeout + 3600, pause_key=key)
    keyset = keyset_from_paused_state(state)
    state.state_details.run_input_keyset = keyset
    with get_client(sync_client=True) as client:
        response = client.set_flow_run_state(flow_run_id, state)
        if response.status != SetStateStatus.ACCEPT:
            if response.state is not None and response.state.is_running():
                return wanted.load(keyset, flow_run_id=flow_run_id)  # this wait fired before and was answered
            raise RuntimeError(f"Prefect refused to pause the run: {response.details}")
        wanted.save(keyset, flow_run_id=flow_run_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and not run.state.is_paused():
                return wanted.load(keyset, flow_run_id=flow_run_id)
        # Nobody answered: resume without input. If a person answered in the same instant, theirs stands.
        resumed = client.resume_flow_run(flow_run_id, run_input=None)
        if resumed.status != SetStateStatus.ACCEPT:
            return wanted.load(keyset, flow_run_id=flow_run_id)
    return None


def send_answer(registry: Registry, version: str, approve: bool, reason: str) -> dict[str, Any]:
    """Answer for a version waiting for approval, as the Prefect UI's form does: resume its flow run with the input.
    Returns {"flow_run_id", "state"}. A version whose run no longer waits (Prefect failed it at the timeout) is
    recorded as rejected, and the UserError says so."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    from flows.registry.approval import time_out, waiting_run

    flow_run_id = waiting_run(registry, version)
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            run = None
    if run is not None and run.state is not None and not run.state.is_final() and not run.state.is_paused():
        raise UserError(f"flow run {flow_run_id} was answered already and is finishing (its state: "
                        f"{run.state.name}); `ganops models` shows the outcome when it is done")
    try:
        if run is None or run.state is None or run.state.is_final():
            raise FlowPauseTimeout(run.state.name if run is not None and run.state is not None else "not found")
        resume_flow_run(UUID(flow_run_id), run_input={"approve": approve, "reason": reason})
    except FlowPauseTimeout:  # the run ended while waiting (Prefect fails a suspended run at its timeout)
        time_out(registry, version, registry.cfg.registry.approval_timeout)
        raise UserError(f"flow run {flow_run_id} no longer waits for version {version}: nobody answered within "
                        f"{registry.cfg.registry.approval_timeout:g} s; recorded the version as rejected") from None
    return {"flow_run_id": flow_run_id, "state": run.state.name}
