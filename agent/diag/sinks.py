"""Where the stored tasks deliver: each webhook once (HEAD, reachability only) and event_center (the broker)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent.diag.report import Check, Level, Progress, masked_check
from agent.redact import mask_url
from agent.settings import AgentSettings

if TYPE_CHECKING:
    from agent.tasks.store import TaskRecord


def check_sinks(records: list[TaskRecord], settings: AgentSettings, broker: Check | None, timeout_s: float,
                progress: Progress) -> list[Check]:
    webhooks: dict[str, list[str]] = {}
    event_center: list[str] = []
    for record in records:
        output = record.spec.output
        if output.webhook is not None:
            webhooks.setdefault(output.webhook.url, []).append(record.id[:8])
        if output.event_center:
            event_center.append(record.id[:8])
    checks = []
    for url, tasks in webhooks.items():
        progress(f"checking webhook {mask_url(url)} …")
        checks.append(check_webhook(url, tasks, timeout_s))
    if event_center:
        checks.append(event_center_check(settings, event_center, broker))
    return checks


def check_webhook(url: str, tasks: list[str], timeout_s: float) -> Check:
    """Reachability only: a HEAD without the task's headers (a probe must not spend credentials)."""
    import httpx

    subject = f"webhook {mask_url(url)}"
    used_by = f" (tasks {', '.join(tasks)})"
    started = time.monotonic()
    try:
        response = httpx.head(url, timeout=timeout_s)
    except httpx.ConnectError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else f"cannot connect: {exc}"
        return masked_check("sink", subject, Level.FAIL, reason + used_by,
                            "Start the receiver, or fix output.webhook.url (host, port); events wait in the outbox.")
    except httpx.TimeoutException:
        return masked_check("sink", subject, Level.FAIL, f"no answer within {timeout_s:g} s" + used_by,
                            "A firewall drops the packets, or the receiver hangs.")
    except httpx.HTTPError as exc:
        return masked_check("sink", subject, Level.FAIL, f"{type(exc).__name__}: {exc}" + used_by,
                            "Check the URL; for https, that the receiver's certificate is trusted.")
    elapsed_ms = (time.monotonic() - started) * 1000
    detail = f"answers HTTP {response.status_code} to HEAD in {elapsed_ms:.0f} ms{used_by}"
    if response.status_code in (500, 502, 503, 504):
        return masked_check("sink", subject, Level.WARN, detail,
                            "The receiver reports a server error: deliveries will be retried until it recovers.",
                            status=response.status_code)
    return masked_check("sink", subject, Level.OK, detail, status=response.status_code,
                        latency_ms=round(elapsed_ms, 1))


def event_center_check(settings: AgentSettings, tasks: list[str], broker: Check | None) -> Check:
    """event_center events go to the broker: their sink is reachable when the broker check passed."""
    used_by = f" (tasks {', '.join(tasks)})"
    if settings.mqtt is None:
        return masked_check("sink", "event_center (MQTT)", Level.FAIL,
                            "tasks publish to event_center, but there is no [mqtt]" + used_by,
                            "Configure [mqtt] again, or update the tasks to a webhook output.")
    if broker is None or broker.level is Level.FAIL:
        return masked_check("sink", "event_center (MQTT)", Level.FAIL, "the broker is unreachable" + used_by,
                            "See the broker check above; events wait in the outbox meanwhile.")
    return masked_check("sink", "event_center (MQTT)", Level.OK,
                        f"via the broker to {settings.topic_prefix}/events/<task id>{used_by}")
