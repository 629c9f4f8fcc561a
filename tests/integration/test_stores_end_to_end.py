"""obs input, obs and dis outputs in a real ``edge-agent run`` process, against moto's S3 server and the
signature-checking DIS server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.agent_process import AgentFactory, AgentProcess
from tests.fixtures.dis import DisServer
from tests.fixtures.obs import S3Server
from tests.runtime.scenes import intrusion_clip, intrusion_task
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

WAIT_S = 90.0  # a loaded 2-core box: generous, never a timing assertion


def task_state(agent: AgentProcess, task_id: str) -> dict[str, Any]:
    with agent.client() as client:
        shown: dict[str, Any] = client.get(f"/v2/p1/tasks/{task_id}").json()
    return shown


def outbox_figure(agent: AgentProcess, name: str, sink: str) -> float:
    text = httpx.get(f"{agent.base_url}/metrics", timeout=10).text
    found = re.search(rf'^edge_agent_outbox_{name}{{sink="{sink}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def create(agent: AgentProcess, body: dict[str, Any]) -> httpx.Response:
    with agent.client() as client:
        return client.post("/v2/p1/services/intrusion-detection/tasks", json=body)


def every_frame_task(**output: Any) -> dict[str, Any]:
    body = intrusion_task("unused", name="stores")
    body["output"] = output
    body["config"]["common"]["cooldown_s"] = 0  # type: ignore[index]
    return body


def test_obs_input_plays_to_the_end_and_every_event_object_survives_an_outage(
        tmp_path: Path, s3_server: S3Server, agent_factory: AgentFactory) -> None:
    bucket = s3_server.create_bucket("clips")
    s3_server.put(bucket, "site-7/walk.mp4", intrusion_clip(tmp_path / "walk.mp4", seconds=12.0).read_bytes())
    agent = agent_factory(s3_server.toml())
    body = every_frame_task(obs={"bucket": bucket, "path": "results"})

    missing = {**body, "input": {"type": "obs", "data": [{"bucket": bucket, "path": "site-7/none.mp4"}]}}
    refused = create(agent, missing)
    assert refused.status_code == 400 and refused.json()["params"] == ["input.data[0].path"]
    assert "NoSuchKey" in refused.json()["detail"]

    body["input"] = {"type": "obs", "data": [{"bucket": bucket, "path": "site-7/walk.mp4", "index": 0}]}
    answer = create(agent, body)
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["tasks"][0]["id"]

    wait_until(lambda: s3_server.objects(bucket, prefix="results/"), timeout=WAIT_S, what="a first event object")
    s3_server.stop()
    wait_until(lambda: outbox_figure(agent, "failed_total", "obs") > 0, timeout=WAIT_S, what="a failed write")
    s3_server.start()
    wait_until(lambda: task_state(agent, task_id)["state"] == "SUCCEEDED", timeout=WAIT_S, what="SUCCEEDED")
    wait_until(lambda: outbox_figure(agent, "backlog", "obs") == 0, timeout=WAIT_S, what="obs backlog drained")

    documents = [json.loads(data) for key, data in s3_server.objects(bucket, prefix="results/").items()
                 if key.endswith(".json")]
    delivered = outbox_figure(agent, "delivered_total", "obs")
    assert len(documents) == delivered > 1
    assert len({d["message_id"] for d in documents}) == len(documents)
    assert {d["task_id"] for d in documents} == {task_id}
    assert outbox_figure(agent, "dead_letters_total", "obs") == 0
    assert s3_server.secret_key not in agent.log.read_text()


def test_refused_obs_credentials_show_in_the_task_while_dis_gets_every_event_in_order(
        tmp_path: Path, s3_server: S3Server, dis_server: DisServer, agent_factory: AgentFactory) -> None:
    bucket = s3_server.create_bucket()
    dis_server.streams.add("results")
    media = tmp_path / "media"
    media.mkdir()
    clip = intrusion_clip(media / "walk.mp4", seconds=8.0)
    agent = agent_factory(s3_server.toml(secret_key="the-wrong-secret") + dis_server.toml(),
                          env={"EDGE_AGENT_MEDIA_ROOTS": json.dumps([str(media)])})
    body = every_frame_task(obs={"bucket": bucket, "path": "results"}, dis={"stream_name": "results"})
    body["input"] = {"type": "url", "data": [{"url": str(clip), "index": 0}]}
    answer = create(agent, body)
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["tasks"][0]["id"]

    wait_until(lambda: task_state(agent, task_id)["state"] == "SUCCEEDED", timeout=WAIT_S, what="SUCCEEDED")
    wait_until(lambda: outbox_figure(agent, "backlog", "dis") == 0 and outbox_figure(agent, "backlog", "obs") == 0,
               timeout=WAIT_S, what="both backlogs settled")
    error = task_state(agent, task_id)["error"]
    assert error is not None and "output.obs" in error["message"] and "SignatureDoesNotMatch" in error["message"]
    with agent.client() as client:
        letters = client.get("/v2/p1/dead-letters").json()["dead_letters"]
    assert letters and {letter["sink"] for letter in letters} == {"obs"}
    assert "the-wrong-secret" not in json.dumps(letters) + agent.log.read_text()

    records = dis_server.stored()
    assert dis_server.rejected == [] and records
    assert {key for _, key, _ in records} == {task_id}
    captured = [data["frame"]["captured_at_ms"] for _, _, data in records]
    assert captured == sorted(captured) and len({data["message_id"] for _, _, data in records}) == len(records)
    assert len(records) == outbox_figure(agent, "delivered_total", "dis") == len(letters)
