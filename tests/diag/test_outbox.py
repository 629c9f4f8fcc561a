"""The outbox check's levels, on figures given as the running agent's /metrics would."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.diag.agent_api import AgentView, Metrics
from agent.diag.outbox import check_outbox
from agent.diag.report import Level
from agent.settings import AgentSettings


def outbox_view(backlog: float, oldest: float, dead: float) -> AgentView:
    metrics: Metrics = {}
    for sink in ("webhook", "mqtt"):
        labels = frozenset({("sink", sink)})
        metrics[("edge_agent_outbox_backlog", labels)] = backlog if sink == "webhook" else 0.0
        metrics[("edge_agent_outbox_oldest_undelivered_age_seconds", labels)] = oldest if sink == "webhook" else 0.0
        metrics[("edge_agent_outbox_dead_letters_total", labels)] = dead if sink == "webhook" else 0.0
    return AgentView({}, metrics)


@pytest.mark.parametrize(("backlog", "oldest", "dead", "level"), [
    (0, 0, 0, Level.OK), (3, 10, 0, Level.OK), (3, 120, 0, Level.WARN), (3, 7200, 0, Level.FAIL),
    (0, 0, 2, Level.WARN),
])
def test_outbox_age_and_dead_letters_set_the_level(tmp_path: Path, backlog: float, oldest: float, dead: float,
                                                   level: Level) -> None:
    settings = AgentSettings(state_dir=tmp_path)
    checks = {c.subject: c for c in check_outbox(settings, outbox_view(backlog, oldest, dead))}
    assert checks["outbox webhook"].level is level
    assert checks["outbox mqtt"].level is Level.OK
    assert f"{int(backlog)} waiting" in checks["outbox webhook"].detail
