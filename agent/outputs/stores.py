"""The obs and dis outputs for the router: the rows an event makes, the delivery pools, the create-time check.

Both go through the durable outbox like the webhook: ``messages`` is called inside the router's submit
(same transaction as the other sinks' rows), and one ``LanePool`` per configured store drains them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from agent.algorithms.event import Event
from agent.obs_client import new_client
from agent.outputs.dis_client import DisClient
from agent.outputs.dis_sink import DisSender
from agent.outputs.envelope import build_envelope, encode_envelope
from agent.outputs.lanes import DeadLetterHook, LanePool
from agent.outputs.obs_sink import ObsSender, obs_payload
from agent.outputs.outbox import NewMessage, Outbox, Sink
from agent.settings import AgentSettings
from agent.tasks.errors import missing_section
from agent.tasks.model import TaskOutput

WORKERS = 4  # per store, as for webhooks: a few slow tasks' lanes cannot hold every other task back
OBS_BATCH = 64  # rows read per lane turn (written one by one)
DIS_BATCH = 500  # one PutRecords at most


def check_store_outputs(settings: AgentSettings, output: TaskOutput) -> None:
    """A task may use obs or dis only when the agent has the section that says where and with which keys."""
    if output.obs is not None and settings.obs is None:
        raise missing_section("output.obs", "obs")
    if output.dis is not None and settings.dis is None:
        raise missing_section("output.dis", "dis")


class StoreOutputs:
    def __init__(self, settings: AgentSettings, outbox: Outbox, wake: Mapping[Sink, threading.Event],
                 on_dead_letter: DeadLetterHook | None = None) -> None:
        self._pools: list[LanePool] = []
        if settings.obs is not None:
            client = new_client(settings.obs)  # thread-safe: the workers share its connection pool
            self._pools.append(LanePool(outbox, Sink.OBS, lambda: ObsSender(client), workers=WORKERS,
                                        batch=OBS_BATCH, wake=wake[Sink.OBS], on_dead_letter=on_dead_letter))
        dis = settings.dis
        if dis is not None:
            keys = settings.dis_key_pair()  # an unreadable key file stops the start-up here, not a worker
            self._pools.append(LanePool(outbox, Sink.DIS, lambda: DisSender(DisClient(dis, keys)), workers=WORKERS,
                                        batch=DIS_BATCH, wake=wake[Sink.DIS], on_dead_letter=on_dead_letter))

    def start(self) -> None:
        for pool in self._pools:
            pool.start()

    def stop(self, deadline: float) -> list[str]:
        """Stop every pool; the names of the threads still running at ``deadline``."""
        return [name for pool in self._pools for name in pool.stop(deadline)]

    @staticmethod
    def messages(output: TaskOutput, event: Event, *, task_id: str, service_name: str, stream_id: str,
                 message_id: str) -> list[NewMessage]:
        """The rows of one event for the output's obs and dis destinations (none when it has neither)."""
        rows = []
        if output.obs is not None:
            payload = obs_payload(event, path=output.obs.path, data_category=output.obs.data_category,
                                  task_id=task_id, service_name=service_name, stream_id=stream_id,
                                  message_id=message_id)
            rows.append(NewMessage(Sink.OBS, task_id, message_id, {"bucket": output.obs.bucket,
                                                                  "path": output.obs.path}, payload))
        if output.dis is not None:
            envelope = build_envelope(event, data_category=output.dis.data_category, task_id=task_id,
                                      service_name=service_name, stream_id=stream_id, message_id=message_id)
            rows.append(NewMessage(Sink.DIS, task_id, message_id, {"stream_name": output.dis.stream_name},
                                   encode_envelope(envelope)))
        return rows
