from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.settings import VideoSource
from agent.sources.resolvers.base import InputRef, InputResolver, ResolveError
from agent.sources.resolvers.restful import RestfulResolver
from agent.sources.resolvers.url import UrlResolver
from agent.sources.resolvers.vcn import VcnResolver
from agent.sources.resolvers.video_source import VideoSourceResolver
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskInputData
from tests.fixtures.restful import LookupServer
from tests.fixtures.vcn import VcnPlatform


def ref(source_id: str, index: int = 0) -> InputRef:
    return InputRef(kind="video_source", data=TaskInputData(video_source_id=source_id), vcn=None, index=index,
                    field=f"input.data[{index}]", task_id="t1")


@pytest.fixture
def delegates(tmp_path: Path) -> Iterator[dict[str, InputResolver]]:
    vcn = VcnResolver(verify=False, timeout_s=5.0)
    yield {"url": UrlResolver([tmp_path]), "restful": RestfulResolver(), "vcn": vcn}
    vcn.close()


def make(delegates: dict[str, InputResolver], *sources: dict[str, Any]) -> VideoSourceResolver:
    return VideoSourceResolver([VideoSource(**source) for source in sources], delegates)


def test_a_url_source_resolves_under_the_video_source_id(delegates: dict[str, InputResolver]) -> None:
    resolver = make(delegates, {"id": "gate", "url": "rtsp://10.0.0.9/gate"})
    resolver.check(ref("gate"))
    target = resolver.resolve(ref("gate"))
    assert target.url == "rtsp://10.0.0.9/gate"


def test_unknown_ids_are_refused_naming_the_field(delegates: dict[str, InputResolver]) -> None:
    resolver = make(delegates, {"id": "gate", "url": "rtsp://10.0.0.9/gate"})
    with pytest.raises(ApiError, match="no video source 'door'") as caught:
        resolver.check(ref("door", index=2))
    assert caught.value.params == ["input.data[2].video_source_id"]
    with pytest.raises(ResolveError, match="no video source 'door'") as failed:
        resolver.resolve(ref("door"))
    assert not failed.value.retryable


def test_a_local_file_source_obeys_the_media_roots(delegates: dict[str, InputResolver], tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    resolver = make(delegates, {"id": "clip", "url": str(tmp_path / "clip.mp4")},
                    {"id": "passwd", "url": "/etc/passwd"})
    assert resolver.resolve(ref("clip")).is_file
    with pytest.raises(ApiError, match=r"video source 'passwd': .*outside the agent's media_roots") as caught:
        resolver.check(ref("passwd"))
    assert caught.value.params == ["input.data[0].video_source_id"]


@pytest.mark.parametrize(("entry", "message"), [
    ({"type": "vcn", "data": {"device_id": "c1"}, "vcn": {"ip": "h", "port": 1, "username": "u", "password": "p"}},
     "input.data.stream_type"),
    ({"type": "vcn", "data": {"device_id": "c1", "stream_type": 1}}, "input.vcn"),
    ({"type": "carrier-pigeon", "data": {}}, "input.type"),
    ({"type": "video_source", "data": {"video_source_id": "loop"}}, "cannot back a video source"),
    ({"type": "url", "data": {"url": "rtsp://x/1", "colour": "red"}}, "input.data.colour"),
])
def test_misconfigured_entries_are_reported_when_a_task_names_them(
        delegates: dict[str, InputResolver], entry: dict[str, Any], message: str) -> None:
    resolver = make(delegates, {"id": "bad", "input": entry})
    with pytest.raises(ApiError, match="video source 'bad' is misconfigured") as caught:
        resolver.check(ref("bad"))
    assert message in caught.value.detail
    assert caught.value.params == ["input.data[0].video_source_id"]


@pytest.mark.integration
def test_a_vcn_source_logs_in_and_names_the_stream_by_its_own_id(
        delegates: dict[str, InputResolver], vcn_platform: VcnPlatform) -> None:
    vcn_platform.cameras["cam01#d"] = "rtsp://10.0.0.5/cam01"
    resolver = make(delegates, {"id": "lobby", "input": {
        "type": "vcn", "data": {"device_id": "cam01#d", "stream_type": 1},
        "vcn": {"ip": vcn_platform.host, "port": vcn_platform.port, "username": vcn_platform.username,
                "password": vcn_platform.password}}})
    resolver.check(ref("lobby"))
    target = resolver.resolve(ref("lobby"))
    assert (target.url, target.transport) == ("rtsp://10.0.0.5/cam01", "tcp")


@pytest.mark.integration
def test_a_restful_source_asks_the_lookup_service(
        delegates: dict[str, InputResolver], restful_server: LookupServer) -> None:
    url = restful_server.json("/cams/7", {"result": {"play": [{"rtsp": "rtsp://10.0.0.7/live"}]}})
    resolver = make(delegates, {"id": "yard", "input": {
        "type": "restful", "data": {"url": url, "rtsp_path_in_response": "result/play/0/rtsp",
                                    "headers": {"X-Key": "k-123456"}}}})
    assert resolver.resolve(ref("yard")).url == "rtsp://10.0.0.7/live"
    assert restful_server.requests[0][1]["x-key"] == "k-123456"
