"""obs and dis outputs through the router and the durable outbox, against a real S3 server (moto) and a DIS
server that checks Huawei's signature."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib

from agent.outputs.router import ResultRouter
from agent.outputs.stores import check_store_outputs
from agent.settings import AgentSettings
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskOutput
from tests.fixtures.dis import Answer, DisServer
from tests.fixtures.obs import S3Server
from tests.outputs.support import TASK_ID, make_event, validate_envelope
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

OTHER_TASK = "fedcba9876543210fedcba9876543210"
JPEG = b"\xff\xd8\xff\xe0 a tiny jpeg \xff\xd9"
WAIT_S = 60.0


def settings_with(state_dir: Path, *sections: str) -> AgentSettings:
    return AgentSettings(node_id="node-1", state_dir=state_dir, **tomllib.loads("".join(sections)))


@pytest.fixture
def make_router() -> Iterator[Callable[..., ResultRouter]]:
    routers: list[ResultRouter] = []

    def make(settings: AgentSettings, **kwargs: Any) -> ResultRouter:
        router = ResultRouter(settings, **kwargs)
        routers.append(router)
        router.start()
        return router

    yield make
    for router in routers:
        router.stop()


def drained(router: ResultRouter, sink: str) -> bool:
    return router.status().sink(sink).backlog == 0


def test_a_task_with_obs_or_dis_needs_the_section(tmp_path: Path) -> None:
    settings = AgentSettings(state_dir=tmp_path)
    for output, field, section in ((TaskOutput(obs={"bucket": "b-1", "path": "p"}), "output.obs", "[obs]"),
                                   (TaskOutput(dis={"stream_name": "s"}), "output.dis", "[dis]")):
        with pytest.raises(ApiError) as caught:
            check_store_outputs(settings, output)
        body = caught.value.body()
        assert body["params"] == [field] and body["error_code"] == "VIAS.00010001"
        assert section in body["detail"] and section in body["advice"]


def test_obs_writes_every_event_and_its_images_as_objects(tmp_path: Path, s3_server: S3Server,
                                                          make_router: Callable[..., ResultRouter]) -> None:
    bucket = s3_server.create_bucket()
    router = make_router(settings_with(tmp_path, s3_server.toml()))
    output = TaskOutput(obs={"bucket": bucket, "path": "site-7/out", "data_category": ["image", "crop"]})
    events = [make_event(n, images={"image": JPEG} if n % 2 else {}, item_images=({"crop": JPEG + b"c"},))
              for n in range(12)]
    router.submit(TASK_ID, "intrusion", output, ["cam-1"], events)
    wait_until(lambda: drained(router, "obs"), timeout=WAIT_S, what="obs backlog drained")

    objects = s3_server.objects(bucket, prefix="site-7/out/")
    documents = {key: json.loads(data) for key, data in objects.items() if key.endswith(".json")}
    assert len(documents) == 12
    for key, envelope in documents.items():
        validate_envelope(envelope)
        assert key == f"site-7/out/{TASK_ID}/2025/06/15/{envelope['message_id']}.json"  # 1_750_000_000 UTC
        assert "_image_data" not in envelope and "image_base64" not in envelope
        prefix = key.removesuffix(".json")
        crop_key = envelope["data"]["event_set"][0]["image_objects"][0]
        assert crop_key == f"{prefix}/crop-1.jpg" and objects[crop_key] == JPEG + b"c"
        if envelope["data"]["event_set"][0]["seq"] % 2:
            assert envelope["image_objects"] == [f"{prefix}/image-0.jpg"] and objects[f"{prefix}/image-0.jpg"] == JPEG
        else:
            assert "image_objects" not in envelope
    assert router.status().sink("obs").delivered == 12


def test_obs_refused_credentials_dead_letter_with_the_reason(tmp_path: Path, s3_server: S3Server,
                                                             make_router: Callable[..., ResultRouter]) -> None:
    bucket = s3_server.create_bucket()
    heard: list[tuple[str, str, str]] = []
    router = make_router(settings_with(tmp_path, s3_server.toml(secret_key="not-the-secret")),
                         on_dead_letter=lambda *args: heard.append(args))
    router.submit(TASK_ID, "intrusion", TaskOutput(obs={"bucket": bucket, "path": "out"}), ["cam-1"],
                  [make_event(n) for n in range(3)])
    wait_until(lambda: router.status().sink("obs").dead_letters == 3, timeout=WAIT_S, what="3 dead letters")
    letters = router.dead_letters()
    assert {letter["sink"] for letter in letters} == {"obs"}
    assert "SignatureDoesNotMatch" in letters[0]["reason"] and "not-the-secret" not in json.dumps(letters)
    assert heard[0][:2] == (TASK_ID, "obs") and "SignatureDoesNotMatch" in heard[0][2]
    assert s3_server.objects(bucket) == {}


def test_obs_outage_loses_nothing(tmp_path: Path, s3_server: S3Server,
                                  make_router: Callable[..., ResultRouter]) -> None:
    bucket = s3_server.create_bucket()
    router = make_router(settings_with(tmp_path, s3_server.toml()))
    output = TaskOutput(obs={"bucket": bucket, "path": "out"})
    router.submit(TASK_ID, "intrusion", output, ["cam-1"], [make_event(n) for n in range(5)])
    wait_until(lambda: drained(router, "obs"), timeout=WAIT_S, what="first events stored")
    s3_server.stop()
    router.submit(TASK_ID, "intrusion", output, ["cam-1"], [make_event(n) for n in range(5, 10)])
    wait_until(lambda: router.status().sink("obs").failed > 0, timeout=WAIT_S, what="a failed attempt")
    assert router.status().sink("obs").backlog == 5
    s3_server.start()
    wait_until(lambda: drained(router, "obs"), timeout=WAIT_S, what="backlog stored after the outage")
    stored = [json.loads(data) for data in s3_server.objects(bucket).values()]
    assert sorted(envelope["data"]["event_set"][0]["seq"] for envelope in stored) == list(range(10))
    assert router.status().sink("obs").dead_letters == 0


def test_dis_stores_every_event_once_in_order_per_task(tmp_path: Path, dis_server: DisServer,
                                                       make_router: Callable[..., ResultRouter]) -> None:
    dis_server.streams.add("results")
    dis_server.script(Answer(503))  # the first request fails whole: the batch is retried
    router = make_router(settings_with(tmp_path, dis_server.toml()))
    output = TaskOutput(dis={"stream_name": "results", "data_category": ["image"]})
    for start in range(0, 600, 100):  # 600 events per task: more than one PutRecords batch
        for task in (TASK_ID, OTHER_TASK):
            router.submit(task, "intrusion", output, ["cam-1"],
                          [make_event(n, images={"image": JPEG}) for n in range(start, start + 100)])
    wait_until(lambda: drained(router, "dis"), timeout=WAIT_S, what="dis backlog drained")
    stored = dis_server.stored()
    assert dis_server.rejected == []
    for task in (TASK_ID, OTHER_TASK):
        records = [(key, data) for stream, key, data in stored if data["task_id"] == task]
        assert all(key == task for key, _ in records)
        assert [data["data"]["event_set"][0]["seq"] for _, data in records] == list(range(600))
    validate_envelope(stored[0][2])
    assert base64.b64decode(stored[0][2]["image_base64"]) == JPEG
    assert router.status().sink("dis").failed >= 2


def test_dis_partial_failure_retries_only_the_refused_records(tmp_path: Path, dis_server: DisServer,
                                                              make_router: Callable[..., ResultRouter]) -> None:
    dis_server.streams.add("results")
    dis_server.script(Answer(200, refuse=frozenset({1, 3})))
    router = make_router(settings_with(tmp_path, dis_server.toml()))
    router.submit(TASK_ID, "intrusion", TaskOutput(dis={"stream_name": "results"}), ["cam-1"],
                  [make_event(n) for n in range(6)])
    wait_until(lambda: drained(router, "dis"), timeout=WAIT_S, what="dis backlog drained")
    seqs = [data["data"]["event_set"][0]["seq"] for _, _, data in dis_server.stored()]
    assert seqs == [0, 2, 4, 5, 1, 3]  # stored once each; the refused two resent, in their order
    assert dis_server.requests == 2


def test_dis_bad_key_or_missing_stream_dead_letters(tmp_path: Path, dis_server: DisServer,
                                                    make_router: Callable[..., ResultRouter]) -> None:
    dis_server.streams.add("results")
    heard: list[tuple[str, str, str]] = []
    router = make_router(settings_with(tmp_path, dis_server.toml(secret_key="wrong-secret-key")),
                         on_dead_letter=lambda *args: heard.append(args))
    router.submit(TASK_ID, "intrusion", TaskOutput(dis={"stream_name": "results"}), ["cam-1"], [make_event(0)])
    wait_until(lambda: router.status().sink("dis").dead_letters == 1, timeout=WAIT_S, what="a dead letter")
    assert dis_server.rejected == ["signature mismatch"]
    assert "HTTP 401" in heard[0][2] and "APIGW.0301" in heard[0][2]

    router = make_router(settings_with(tmp_path / "second", dis_server.toml()))
    router.submit(TASK_ID, "intrusion", TaskOutput(dis={"stream_name": "nowhere"}), ["cam-1"], [make_event(0)])
    wait_until(lambda: router.status().sink("dis").dead_letters == 1, timeout=WAIT_S, what="a dead letter")
    assert "DIS.4301" in router.dead_letters()[0]["reason"]
    assert dis_server.stored() == []
