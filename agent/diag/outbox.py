"""The outbox per sink: backlog, oldest undelivered age, dead letters; from /metrics, else from outbox.db."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.diag.agent_api import AgentView
from agent.diag.report import Check, Level, masked_check
from agent.diag.state_dir import store_access
from agent.settings import AgentSettings

if TYPE_CHECKING:
    from agent.outputs.outbox import Outbox

OLDEST_WARN_S = 60.0
OLDEST_FAIL_S = 3600.0


def check_outbox(settings: AgentSettings, view: AgentView | None) -> list[Check]:
    if view is not None and view.has("edge_agent_outbox_backlog"):
        figures = _figures_from_metrics(view)
    else:
        path, refused = store_access(settings, "outbox.db")
        if refused is not None:
            return [refused]
        if path is None:
            return [masked_check("outbox", "outbox", Level.OK, "empty (no outbox.db yet)")]
        from agent.outputs.outbox import Outbox

        try:
            outbox = Outbox(path, max_bytes=settings.outbox.max_bytes)
        except Exception as exc:  # a locked or corrupt file is a finding, not a crash
            return [masked_check("outbox", "outbox", Level.FAIL, f"cannot read {path}: {type(exc).__name__}: {exc}",
                                 "Is the disk full or the file damaged?")]
        try:
            figures = _figures_from_store(outbox)
        finally:
            outbox.close()
    return [_sink_check(sink, numbers) for sink, numbers in figures.items()]


def _figures_from_metrics(view: AgentView) -> dict[str, dict[str, float]]:
    return {sink: {
        "backlog": view.value("edge_agent_outbox_backlog", sink=sink) or 0.0,
        "oldest_s": view.value("edge_agent_outbox_oldest_undelivered_age_seconds", sink=sink) or 0.0,
        "delivered": view.value("edge_agent_outbox_delivered_total", sink=sink) or 0.0,
        "failed": view.value("edge_agent_outbox_failed_total", sink=sink) or 0.0,
        "dead_letters": view.value("edge_agent_outbox_dead_letters_total", sink=sink) or 0.0,
    } for sink in ("webhook", "mqtt", "obs", "dis")}


def _figures_from_store(outbox: Outbox) -> dict[str, dict[str, float]]:
    from agent.outputs.outbox import Sink

    figures: dict[str, dict[str, float]] = {}
    for sink in Sink:
        stats = outbox.stats(sink)
        figures[sink.value] = {"backlog": stats.backlog, "oldest_s": stats.oldest_undelivered_age_s or 0.0,
                               "delivered": stats.delivered, "failed": stats.failed,
                               "dead_letters": stats.dead_letters}
    return figures


def _sink_check(sink: str, numbers: dict[str, float]) -> Check:
    backlog, oldest, dead = int(numbers["backlog"]), numbers["oldest_s"], int(numbers["dead_letters"])
    detail = (f"{backlog} waiting" + (f", oldest {oldest:.0f} s" if backlog else "") +
              f"; {int(numbers['delivered'])} delivered, {int(numbers['failed'])} failed attempt(s), "
              f"{dead} dead letter(s)")
    data: dict[str, Any] = {"sink": sink, **numbers}
    if backlog and oldest > OLDEST_FAIL_S:
        level, hint = Level.FAIL, f"Nothing delivered to {sink} for over an hour: fix the sink (see above)."
    elif backlog and oldest > OLDEST_WARN_S:
        level, hint = Level.WARN, f"Events wait for {sink}: the sink is slow or down (see above)."
    elif dead:
        level, hint = Level.WARN, "Some events were refused for good: GET /v2/<project>/dead-letters shows why."
    else:
        level, hint = Level.OK, None
    return masked_check("outbox", f"outbox {sink}", level, detail, hint, **data)
