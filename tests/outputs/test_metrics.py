from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from agent.outputs.metrics import OutboxCollector
from agent.outputs.router import ResultRouter
from tests.outputs.support import TASK_ID, make_event, make_settings, webhook_output


def test_status_is_exported(tmp_path: Path) -> None:
    router = ResultRouter(make_settings(tmp_path, max_bytes=1 << 20))
    try:
        output = webhook_output("http://127.0.0.1:9/never", ["image"])
        for n in range(12):
            router.submit(TASK_ID, "svc", output, ["cam"], [make_event(n, images={"image": b"\xff" * 100_000})])
        registry = CollectorRegistry()
        registry.register(OutboxCollector(router))
        text = generate_latest(registry).decode()
        status = router.status().sink("webhook")
    finally:
        router.stop()
    assert f'edge_agent_outbox_backlog{{sink="webhook"}} {float(status.backlog)}' in text
    assert f'edge_agent_outbox_dropped_at_cap_total{{sink="webhook"}} {float(status.dropped_at_cap)}' in text
    assert status.dropped_at_cap > 0
    assert 'edge_agent_outbox_delivered_total{sink="mqtt"} 0.0' in text
    assert "edge_agent_events_mqtt_connected" not in text  # no broker configured
