"""Tell people what a retrain did: one short message per outcome to every configured target.

    text = outcome_message("promoted", result, "ganops-generator", "champion", link)
    notify(cfg.notify, "promoted", text)     # "ganops-generator v3 promoted to @champion (fid_lenet 12.3) <link>"

Targets (params.yaml `notify`): webhooks whose URLs are in environment variables (`webhook_env`; each gets a POST of
JSON {"text": ...}, which Slack, Teams and Mattermost incoming webhooks accept), and Prefect notification blocks
(`blocks`, `<block-type-slug>/<name>`; the block's own notify(body, subject) sends it, with the secret kept in the
block). The outcomes are promoted, rejected, waiting (for approval) and failed; a skipped run sends nothing.

A message is a courtesy, not a step: a target that is unset, slow or unreachable costs one warning line in the run's
log, never the retrain. Every message goes through gan_core.redact, and a webhook's URL is never logged (its path is
often its secret): warnings name the environment variable.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx

from gan_core.config.schema import NotifyConfig
from gan_core.redact import redact

OUTCOMES = ("promoted", "rejected", "waiting", "failed")
SUBJECTS = {"promoted": "ganops: promoted", "rejected": "ganops: rejected", "waiting": "ganops: waiting for approval",
            "failed": "ganops: retrain failed"}

log = logging.getLogger(__name__)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger when there is one (the warning belongs in its log), else this module's."""
    from prefect.context import FlowRunContext
    from prefect.logging import get_run_logger

    return get_run_logger() if FlowRunContext.get() is not None else log


def notify(targets: NotifyConfig, outcome: str, text: str) -> int:
    """Send `text` (one short message about `outcome`, one of OUTCOMES) to every target; return how many took it.
    Never raises for a target: each failure is one warning line."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    text = redact(text)
    sent = 0
    for env in targets.webhook_env:
        sent += _post(env, text, targets.timeout)
    for block in targets.blocks:
        sent += _notify_block(block, text, SUBJECTS[outcome])
    return sent


def _post(env: str, text: str, timeout: float) -> bool:
    url = os.environ.get(env, "").strip()
    if not url:
        _logger().warning("notify: environment variable %s (notify.webhook_env) is not set; no message sent", env)
        return False
    try:
        httpx.post(url, json={"text": text}, timeout=timeout).raise_for_status()
    except (httpx.HTTPError, ValueError) as e:  # ValueError: not a URL httpx can send to
        # The exception's text quotes the URL, and a webhook's path is its secret: name the variable only.
        why = f"HTTP {e.response.status_code}" if isinstance(e, httpx.HTTPStatusError) else type(e).__name__
        _logger().warning("notify: the webhook in %s did not take the message (%s)", env, why)
        return False
    return True


def _notify_block(name: str, text: str, subject: str) -> bool:
    from prefect.blocks.core import Block

    try:
        Block.load(name).notify(text, subject=subject)
    except Exception as e:  # a missing block, a service that refused: a warning, never the run
        _logger().warning("notify: Prefect block %s did not send the message (%s: %s)", name, type(e).__name__,
                          redact(str(e).splitlines()[0] if str(e) else ""))
        return False
    return True


def outcome_message(outcome: str, result: dict[str, Any], model_name: str, champion_alias: str,
                    link: str | None = None) -> str:
    """The one short message about a retrain's outcome, from its result: promoted (version, primary metric),
    rejected (the failed checks, or why it was not promoted), waiting (how to answer), failed (the step and the
    one-line error); `link` (the flow run's or version's page) is appended when known."""
    version = result.get("version")
    what = f"{model_name} v{version}"
    if outcome == "promoted":
        primary = result.get("primary_metric")
        value = (result.get("metrics") or {}).get(primary) if primary else None
        metric = f" ({primary} {value:.4g})" if isinstance(value, float | int) else ""
        previous = result.get("previous_champion")
        text = f"{what} promoted to @{champion_alias}{metric}" + (f", replacing v{previous}" if previous else "")
    elif outcome == "rejected":
        failed = [c["reason"] for c in (result.get("gate") or {}).get("checks", []) if not c.get("passed")]
        why = result.get("reason") or "; ".join(failed) or "the gate did not pass it"
        text = f"{what} rejected, @{champion_alias} unchanged: {why}"
    elif outcome == "waiting":
        text = (f"{what} passed the gate and waits for approval: answer the form in the Prefect UI, or "
                f"`ganops approve {version}` / `ganops reject {version} --reason TEXT`")
    else:
        text = f"retrain of {model_name} failed, no alias was moved: {result.get('error', 'unknown error')}"
    return f"{text} {link}" if link else text
