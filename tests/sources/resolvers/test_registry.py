from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sources.resolvers.base import ResolveError
from agent.sources.resolvers.registry import ResolverSet, source_id_of
from agent.tasks.errors import ApiError
from tests.fixtures.edgecore import Device, EdgeCore
from tests.fixtures.ports import free_port
from tests.fixtures.restful import LookupServer
from tests.fixtures.vcn import VcnPlatform
from tests.sources.resolvers.helpers import settings, spec
from tests.waiting import wait_until


@pytest.fixture
def resolvers(tmp_path: Path) -> Iterator[ResolverSet]:
    made = ResolverSet(settings(tmp_path, media_roots=[tmp_path], cameras=[{"id": "cam-1", "url": "rtsp://c/1"}],
                                video_sources=[{"id": "gate", "url": "rtsp://10.0.0.9/gate"}]))
    yield made
    made.close()


def test_check_names_the_failing_field_for_each_input_type(resolvers: ResolverSet, tmp_path: Path) -> None:
    cases = [
        (spec("url", {"url": "rtsp://ok/1"}, {"url": "ftp://no/2"}), "input.data[1].url"),
        (spec("url", {"url": "/etc/passwd"}), "input.data[0].url"),
        (spec("video_source", {"video_source_id": "gate"}, {"video_source_id": "nope"}),
         "input.data[1].video_source_id"),
        (spec("edgecamera", {"id": "cam-2"}), "input.data[0].id"),
        (spec("restful", {"url": "file:///x", "rtsp_path_in_response": "a"}), "input.data[0].url"),
    ]
    for task, field in cases:
        with pytest.raises(ApiError) as caught:
            resolvers.check(task)
        assert caught.value.params == [field], task.input
        assert caught.value.body()["error_code"] == "VIAS.00010001"
    resolvers.check(spec("edgecamera", {"id": "cam-1"}))


def test_check_does_no_network_io(resolvers: ResolverSet, vcn_platform: VcnPlatform) -> None:
    resolvers.check(spec("vcn", {"device_id": "c#d", "stream_type": 1},
                         vcn={"ip": vcn_platform.host, "port": vcn_platform.port, "username": "u",
                              "password": "p1234"}))
    resolvers.check(spec("restful", {"url": f"http://127.0.0.1:{free_port()}/x", "rtsp_path_in_response": "a"}))
    assert vcn_platform.calls == []


def test_source_ids_follow_the_input_kind() -> None:
    task = spec("url", {"url": "rtsp://a/1", "stream_name": "front-door"}, {"url": "rtsp://a/2"})
    assert source_id_of("url", task, 0) == "front-door"
    assert source_id_of("url", task, 1) == "input-1"
    assert source_id_of("edgecamera", spec("edgecamera", {"id": "cam-1"}), 0) == "cam-1"
    assert source_id_of("video_source", spec("video_source", {"video_source_id": "gate"}), 0) == "gate"
    vcn = {"ip": "10.0.0.2", "port": 443, "username": "u", "password": "p"}
    assert source_id_of("vcn", spec("vcn", {"device_id": "a#d", "stream_type": 1}, vcn=vcn), 0) == "a#d"


def test_the_resolver_is_called_again_on_every_reconnect(resolvers: ResolverSet, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00")
    resolve = resolvers.resolver_for(spec("url", {"url": str(clip)}), "t1", 0)
    assert resolve().is_file
    clip.unlink()
    with pytest.raises(ResolveError, match="no such file"):
        resolve()


def test_watch_is_a_no_op_for_inputs_without_change_notifications(resolvers: ResolverSet) -> None:
    unsubscribe = resolvers.watch(spec("url", {"url": "rtsp://a/1"}), "t1", 0, lambda reason: None)
    unsubscribe()
    resolvers.watch(spec("edgecamera", {"id": "cam-1"}), "t1", 0, lambda reason: None)()


@pytest.mark.integration
def test_vcn_inputs_share_one_session_and_close_logs_out(tmp_path: Path, vcn_platform: VcnPlatform) -> None:
    vcn_platform.cameras.update({"a#d": "rtsp://10.0.0.5/a", "b#d": "rtsp://10.0.0.5/b"})
    vcn = {"ip": vcn_platform.host, "port": vcn_platform.port, "username": vcn_platform.username,
           "password": vcn_platform.password}
    first = spec("vcn", {"device_id": "a#d", "stream_type": 1}, vcn=vcn)
    second = spec("vcn", {"device_id": "b#d", "stream_type": 2}, vcn=vcn)
    resolvers = ResolverSet(settings(tmp_path), vcn_keepalive_s=600)
    try:
        assert resolvers.resolver_for(first, "t1", 0)().url == "rtsp://10.0.0.5/a"
        assert resolvers.resolver_for(second, "t2", 0)().url == "rtsp://10.0.0.5/b"
        assert vcn_platform.count("/loginInfo/login/v1.0") == 1
    finally:
        resolvers.close()
    assert vcn_platform.calls[-1] == ("GET", "/users/logout")
    assert not [t for t in threading.enumerate() if t.name.startswith("vcn-keepalive-")]


@pytest.mark.integration
def test_edgecamera_watch_reaches_the_pipeline_and_survives_a_failing_handler(
        tmp_path: Path, edgecore: EdgeCore) -> None:
    edgecore.devices["cam-9"] = Device(attribute_url="rtsp://10.2.2.2/a")
    resolvers = ResolverSet(settings(tmp_path, node_id=edgecore.node_id,
                                     mqtt={"host": edgecore.broker.host, "port": edgecore.broker.port}),
                            lookup_timeout_s=5.0)
    task = spec("edgecamera", {"id": "cam-9"})
    heard: list[str] = []

    def on_change(reason: str) -> None:
        heard.append(reason)
        raise RuntimeError("pipeline bug")

    try:
        resolvers.check(task)  # with MQTT, unknown-locally ids are fine: the twin decides
        assert resolvers.resolver_for(task, "t1", 0)().url == "rtsp://10.2.2.2/a"
        resolvers.watch(task, "t1", 0, on_change)
        def first_change_heard() -> bool:
            edgecore.publish_attribute_update("cam-9", "rtsp://10.2.2.2/b")  # until the SUBSCRIBE is in place
            return bool(heard)

        wait_until(first_change_heard, 10, "the attribute change", interval=0.1)
        edgecore.publish_twin_update("cam-9", "rtsp://10.2.2.2/c")
        wait_until(lambda: len(heard) >= 2, 10, "the twin change after the handler raised")
        assert len(heard) == 2  # the first handler error did not stop deliveries
        assert resolvers.resolver_for(task, "t1", 0)().url == "rtsp://10.2.2.2/b"  # attribute before twin
    finally:
        resolvers.close()


@pytest.mark.integration
def test_no_secret_reaches_the_logs_or_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                              vcn_platform: VcnPlatform, restful_server: LookupServer,
                                              edgecore: EdgeCore) -> None:
    caplog.set_level(logging.DEBUG)
    vcn_platform.cameras["a#d"] = "rtsp://vcnuser:vcn-stream-pw-41@10.0.0.5/a"
    edgecore.devices["cam-1"] = Device(attribute_url="rtsp://admin:twin-cam-pw-42@10.3.3.3/live")
    lookup = restful_server.json("/cams", {"data": [{"url": "rtsp://svc:rest-cam-pw-43@10.4.4.4/1"}]})
    broken = restful_server.json("/broken", {"oops": True}, status=502)
    config = settings(tmp_path, node_id=edgecore.node_id,
                      mqtt={"host": edgecore.broker.host, "port": edgecore.broker.port},
                      cameras=[{"id": "cam-2", "url": "rtsp://local:registry-pw-44@10.5.5.5/2"}],
                      video_sources=[{"id": "vs", "url": "rtsp://vsuser:source-pw-45@10.6.6.6/x"}])
    secrets = ["vcn-platform-pw-40", "vcn-stream-pw-41", "twin-cam-pw-42", "rest-cam-pw-43", "registry-pw-44",
               "source-pw-45", "header-token-46", "url-input-pw-47", "wrong-vcn-pw-48"]
    vcn_platform.password = "vcn-platform-pw-40"
    vcn = {"ip": vcn_platform.host, "port": vcn_platform.port, "username": vcn_platform.username}
    tasks = [
        spec("vcn", {"device_id": "a#d", "stream_type": 1}, vcn={**vcn, "password": "vcn-platform-pw-40"}),
        spec("vcn", {"device_id": "missing#d", "stream_type": 1}, vcn={**vcn, "password": "vcn-platform-pw-40"}),
        spec("edgecamera", {"id": "cam-1"}, {"id": "cam-2"}),
        spec("restful", {"url": lookup, "rtsp_path_in_response": "data/0/url",
                         "headers": {"Authorization": "Bearer header-token-46"}},
             {"url": broken, "rtsp_path_in_response": "data/0/url",
              "headers": {"Authorization": "Bearer header-token-46"}}),
        spec("url", {"url": "rtsp://cam:url-input-pw-47@10.7.7.7/1"}, {"url": "ftp://cam:url-input-pw-47@h/x"}),
        spec("video_source", {"video_source_id": "vs"}),
    ]
    messages: list[str] = []
    resolvers = ResolverSet(config, lookup_timeout_s=5.0)
    try:
        for task in tasks:
            try:
                resolvers.check(task)
            except ApiError as exc:
                messages.append(str(exc.body()))
            for index in range(len(task.input.data)):
                try:
                    target = resolvers.resolver_for(task, "t1", index)()
                    logging.getLogger("agent.test").info("resolved %s / %r", target.masked, target)
                except ResolveError as exc:
                    messages.append(str(exc))
        wrong = spec("vcn", {"device_id": "a#d", "stream_type": 1}, vcn={**vcn, "password": "wrong-vcn-pw-48"})
        vcn_platform.expire_sessions()
        with pytest.raises(ResolveError) as caught:
            resolvers.resolver_for(wrong, "t2", 0)()
        messages.append(str(caught.value))
    finally:
        resolvers.close()
    assert len(messages) >= 4  # the failures above did happen and were reported
    text = "\n".join(messages) + "\n" + caplog.text
    for secret in secrets:
        assert secret not in text, secret
