"""Result delivery: VIAS envelopes, the durable outbox, and the webhook and MQTT sinks (docs/events.md)."""

from agent.outputs.router import ResultRouter, RouterStatus, SinkStatus, check_output

__all__ = ["ResultRouter", "RouterStatus", "SinkStatus", "check_output"]
