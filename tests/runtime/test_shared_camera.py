"""Tasks watching one camera through a real agent: one RTSP connection, each task's own rate and status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.runtime.app import AgentRuntime
from agent.settings import AgentSettings
from tests.fixtures.ports import free_port
from tests.fixtures.rtsp import RtspServerFactory
from tests.fixtures.webhook import WebhookReceiver
from tests.runtime.scenes import intrusion_task
from tests.waiting import wait_until


def inputs(runtime: AgentRuntime, task_id: str) -> list[dict[str, Any]]:
    return list(runtime.service.show("p", task_id)["inputs"])


@pytest.mark.integration
def test_tasks_on_one_camera_share_its_connection(tmp_path: Path, rtsp_server: RtspServerFactory,
                                                  webhook_receiver: WebhookReceiver,
                                                  runtimes: list[AgentRuntime]) -> None:
    server = rtsp_server(codec="h264", fps=25, gop=25)
    config = AgentSettings(node_id="shared-test", state_dir=tmp_path / "state",
                           api={"listen": f"127.0.0.1:{free_port()}", "token": "t0k3n-shared"})
    runtime = AgentRuntime(config)
    runtimes.append(runtime)
    runtime.start()
    # the same camera spelled two ways, at two rates
    slow = runtime.service.create("p", "intrusion-detection",
                                  intrusion_task(server.url, webhook_receiver.url, name="slow", fps=1.0))
    fast = runtime.service.create("p", "intrusion-detection",
                                  intrusion_task(server.url.replace("rtsp://127.0.0.1", "RTSP://127.0.0.1"),
                                                 webhook_receiver.url, name="fast", fps=5.0))

    def shared(task_id: str) -> dict[str, Any] | None:
        entries = inputs(runtime, task_id)
        return entries[0] if entries and entries[0]["state"] == "RUNNING" and entries[0]["shared_by"] == 2 else None

    slow_input = wait_until(lambda: shared(slow), 60, "the slow task's input on the shared stream")
    fast_input = wait_until(lambda: shared(fast), 60, "the fast task's input on the shared stream")
    assert server.clients() == 1
    assert slow_input["decode_mode"] == fast_input["decode_mode"] == "sampled"  # 5 fps of 25 needs every frame
    assert {"decode_errors", "dropped"} <= set(slow_input)
    wait_until(lambda: inputs(runtime, fast)[0]["fps"] > 2 * inputs(runtime, slow)[0]["fps"] > 0, 60,
               "each task sampling at its own rate")

    runtime.service.delete("p", fast)  # the other task keeps its stream, now keyframes only
    wait_until(lambda: inputs(runtime, slow)[0]["shared_by"] == 1
               and inputs(runtime, slow)[0]["decode_mode"] == "keyframes", 60, "keyframe-only for the slow task")
    assert server.clients() == 1 and inputs(runtime, slow)[0]["reconnects"] == 0
    runtime.service.delete("p", slow)
    wait_until(lambda: server.clients() == 0, 30, "the connection to close with its last task")
