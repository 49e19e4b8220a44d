"""The named final state of a flow run, so Prefect's runs list tells a promotion from a rejection at a glance.

    return final_state(result)     # at the end of a flow: Completed, or Completed named "Rejected" / "Skipped"

A finished retrain (or sweep) is a success for Prefect whatever the gate decided, so its state type stays
COMPLETED (dashboards and automations that look at state types see a finished run) and its name says the outcome:
the runs list shows "Rejected" or "Skipped" in place of "Completed", and Prefect emits the event
`prefect.flow-run.Rejected` (`.Skipped`), so an automation that deploys on `prefect.flow-run.Completed` fires on
promotions only. The flow's return value is unchanged: calling the flow still returns the result dict.

A new outcome is one entry in FINAL_STATE_NAMES (a status of the flow's result → the state's name).
"""

from __future__ import annotations

from typing import Any

from prefect.states import Completed, State

FINAL_STATE_NAMES: dict[str, str] = {
    "promoted": "Completed",
    "unchanged": "Completed",  # a sweep whose best trial is the champion already
    "rejected": "Rejected",
    "skipped": "Skipped",
}
"""The final state's name for each status of a retrain's (or sweep's) result; other statuses end "Completed"."""


def final_state(result: dict[str, Any]) -> State:
    """The COMPLETED state that ends a flow run with `result` as its return value, named by FINAL_STATE_NAMES
    after result["status"], with a one-line message (what happened to which version)."""
    status = str(result.get("status", ""))
    version = result.get("version")
    name = result.get("model_name")
    about = f"version {version} of {name}" if version and name else f"version {version}" if version else ""
    message = f"{status}: {about}" if about else status
    return Completed(name=FINAL_STATE_NAMES.get(status, "Completed"), data=result, message=message or None)
