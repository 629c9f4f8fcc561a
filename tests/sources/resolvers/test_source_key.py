"""``source_key``: which inputs name the same source (and so share one connection)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.sources.source_key import source_key
from tests.sources.resolvers.helpers import spec

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
# secrets spelled unlike any host, path or label text, so "not in the label" tests the masking
_secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$*", min_size=3,
                   max_size=16).map(lambda text: f"Pw!{text}")
_VCN = {"ip": "10.0.0.5", "port": 18531, "username": "ops", "password": "s3cret-pw"}


def _key(kind: str, data: dict[str, Any], vcn: dict[str, Any] | None = None, *, index: int = 0) -> Any:
    items = [{"stream_name": f"other-{i}", **data} for i in range(index)] + [data]
    return source_key(spec(kind, *items, vcn=vcn), index)


def _mixed_case(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips + [False] * len(text), strict=False))


@given(host=_names, path=_names, flips=st.lists(st.booleans(), max_size=40), explicit_port=st.booleans(),
       stream_name=_names, index=st.integers(0, 3))
def test_one_rtsp_camera_however_its_url_is_spelled(host: str, path: str, flips: list[bool], explicit_port: bool,
                                                     stream_name: str, index: int) -> None:
    plain = _key("url", {"url": f"rtsp://{host}/{path}"})
    scheme_host = _mixed_case(f"rtsp://{host}", flips)
    spelled = f"{scheme_host}{':554' if explicit_port else ''}/./{path}"
    other = _key("url", {"url": spelled, "stream_name": stream_name}, index=index)
    assert other == plain and hash(other) == hash(plain)
    assert plain.shared


@given(host=_names, user=_names, first=_secrets, second=_secrets)
def test_credentials_are_compared_and_never_shown(host: str, user: str, first: str, second: str) -> None:
    one = _key("url", {"url": f"rtsp://{user}:{first}@{host}/live"})
    two = _key("url", {"url": f"rtsp://{user}:{second}@{host}/live"})
    anonymous = _key("url", {"url": f"rtsp://{host}/live"})
    assert (one == two) == (first == second)
    assert one != anonymous
    for key in (one, two):
        assert first not in key.label and second not in key.label
        assert first not in repr(key) and second not in repr(key)


def test_a_url_with_no_path_is_its_root_and_the_query_counts() -> None:
    assert _key("url", {"url": "rtsp://cam"}) == _key("url", {"url": "rtsp://cam:554/"})
    assert _key("url", {"url": "rtsp://cam/live?channel=1"}) != _key("url", {"url": "rtsp://cam/live?channel=2"})
    assert _key("url", {"url": "rtsp://cam/live"}) != _key("url", {"url": "rtsp://cam:8554/live"})
    assert _key("url", {"url": "rtsp://cam/live"}) != _key("url", {"url": "rtsps://cam/live"})
    assert _key("url", {"url": "rtsp://u:p%40ss@cam/live"}) == _key("url", {"url": "rtsp://u:p@ss@cam/live"})


@given(name=_names)
def test_files_are_never_shared(name: str) -> None:
    local = _key("url", {"url": f"/media/{name}.mp4"})
    assert local == _key("url", {"url": f"file:///media/./{name}.mp4"})  # the same file…
    assert not local.shared  # …but each task plays it from the start
    assert not _key("url", {"url": f"http://server/{name}.mp4"}).shared
    assert _key("url", {"url": f"http://server/{name}.m3u8"}).shared  # a live HTTP stream is a camera


@given(device=_names, stream_type=st.integers(1, 3), stream_name=_names)
def test_vcn_platform_device_and_stream_type(device: str, stream_type: int, stream_name: str) -> None:
    key = _key("vcn", {"device_id": device, "stream_type": stream_type}, _VCN)
    assert key == _key("vcn", {"device_id": device, "stream_type": stream_type, "stream_name": stream_name},
                       {**_VCN, "ip": "10.0.0.5"})
    assert key != _key("vcn", {"device_id": device, "stream_type": stream_type % 3 + 1}, _VCN)
    assert key != _key("vcn", {"device_id": device, "stream_type": stream_type}, {**_VCN, "port": 18532})
    assert key != _key("vcn", {"device_id": device, "stream_type": stream_type}, {**_VCN, "username": "other"})
    assert key != _key("vcn", {"device_id": device, "stream_type": stream_type}, {**_VCN, "password": "other-pw"})
    assert _VCN["password"] not in key.label and _VCN["username"] not in key.label


@given(camera=_names)
def test_edgecamera_and_video_source_by_id(camera: str) -> None:
    assert _key("edgecamera", {"id": camera}) == _key("edgecamera", {"id": camera, "stream_name": "x"}, index=2)
    assert _key("edgecamera", {"id": camera}) != _key("edgecamera", {"id": camera + "-2"})
    assert _key("video_source", {"video_source_id": camera}) == _key("video_source", {"video_source_id": camera})
    # different kinds are different sources even when their ids are spelled alike
    assert _key("video_source", {"video_source_id": camera}) != _key("edgecamera", {"id": camera})


@given(token=_secrets, other=_secrets)
def test_restful_lookup_url_path_and_headers(token: str, other: str) -> None:
    base = {"url": "https://lookup.example/cams/7", "rtsp_path_in_response": "data/url",
            "headers": {"X-Token": token}}
    key = _key("restful", base)
    assert key == _key("restful", {**base, "url": "HTTPS://LOOKUP.example:443/cams/7",
                                   "headers": {"x-token": token}})
    assert (key == _key("restful", {**base, "headers": {"X-Token": other}})) == (token == other)
    assert key != _key("restful", {**base, "rtsp_path_in_response": "data/backup"})
    assert key != _key("restful", {**base, "certificate_check": True})
    assert token not in key.label and token not in repr(key)
