"""Prometheus view of the result router: read from ``ResultRouter.status()`` at scrape time.

Register once: ``prometheus_client.REGISTRY.register(OutboxCollector(router))``. Counters come from the
outbox's persistent counters, so they survive restarts (Prometheus handles that as it would a reset-free
counter).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.outputs.router import ResultRouter


class OutboxCollector(Collector):
    def __init__(self, router: ResultRouter) -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        status = self._router.status()
        backlog = GaugeMetricFamily("edge_agent_outbox_backlog", "Undelivered events.", labels=["sink"])
        oldest = GaugeMetricFamily("edge_agent_outbox_oldest_undelivered_age_seconds",
                                   "Age of the oldest undelivered event (0 when none).", labels=["sink"])
        delivered = CounterMetricFamily("edge_agent_outbox_delivered", "Events delivered.", labels=["sink"])
        failed = CounterMetricFamily("edge_agent_outbox_failed_attempts",
                                     "Delivery attempts that failed and were retried.", labels=["sink"])
        dead = CounterMetricFamily("edge_agent_outbox_dead_letters", "Events refused for good.", labels=["sink"])
        dropped = CounterMetricFamily("edge_agent_outbox_dropped_at_cap",
                                      "Undelivered events dropped at the size cap.", labels=["sink"])
        for sink in status.sinks:
            backlog.add_metric([sink.sink], sink.backlog)
            oldest.add_metric([sink.sink], sink.oldest_undelivered_age_s or 0.0)
            delivered.add_metric([sink.sink], sink.delivered)
            failed.add_metric([sink.sink], sink.failed)
            dead.add_metric([sink.sink], sink.dead_letters)
            dropped.add_metric([sink.sink], sink.dropped_at_cap)
        stored = GaugeMetricFamily("edge_agent_outbox_stored_bytes", "Bytes of undelivered events.",
                                   value=status.stored_bytes)
        cap = GaugeMetricFamily("edge_agent_outbox_max_bytes", "The outbox size cap.", value=status.max_bytes)
        yield from (backlog, oldest, delivered, failed, dead, dropped, stored, cap)
        if status.mqtt_connected is not None:
            yield GaugeMetricFamily("edge_agent_events_mqtt_connected", "1 when the events connection is up.",
                                    value=1.0 if status.mqtt_connected else 0.0)
