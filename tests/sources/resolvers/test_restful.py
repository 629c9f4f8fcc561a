from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.redact import secrets
from agent.sources.resolvers.base import InputRef, ResolveError
from agent.sources.resolvers.restful import PathError, RestfulResolver, split_path, walk
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskInputData
from tests.fixtures.restful import LookupServer

# keys a lookup service could use; "/" separates segments, so it cannot be part of a key
keys = st.text(st.characters(exclude_characters="/", exclude_categories=["Cs"]), min_size=1, max_size=8)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                st.dictionaries(keys, inner, max_size=4)),
                           max_leaves=12)
steps = st.lists(st.one_of(st.tuples(st.just("key"), keys),
                           st.tuples(st.just("index"), st.integers(0, 5))), min_size=1, max_size=6)


@given(steps=steps, leaf=json_values, filler=json_values)
def test_walk_finds_the_leaf_a_path_leads_to(steps: list[tuple[str, Any]], leaf: Any, filler: Any) -> None:
    document = leaf
    for kind, step in reversed(steps):
        if kind == "key":
            document = {step: document, f"{step}~other": filler}
        else:
            document = [filler] * step + [document] + [filler]
    path = "/".join(str(step) for _, step in steps)
    assert walk(document, path) == leaf


@given(document=json_values, path=st.text(max_size=30))
def test_walk_either_finds_something_or_says_where_it_stopped(document: Any, path: str) -> None:
    try:
        walk(document, path)
    except PathError as exc:
        assert str(exc)


@given(path=st.lists(keys, min_size=1, max_size=5))
def test_split_path_ignores_empty_segments(path: list[str]) -> None:
    assert split_path("/" + "//".join(path) + "/") == path


def test_walk_errors_say_which_segment_failed() -> None:
    document = {"data": {"streams": [{"url": "rtsp://a/1"}], "count": 1}}
    assert walk(document, "data/streams/0/url") == "rtsp://a/1"
    with pytest.raises(PathError, match="no key 'stream' at data"):
        walk(document, "data/stream/0/url")
    with pytest.raises(PathError, match=r"index 3 is out of range at data/streams \(a list of 1\)"):
        walk(document, "data/streams/3/url")
    with pytest.raises(PathError, match="data/streams is a list; 'first' is not an index"):
        walk(document, "data/streams/first")
    with pytest.raises(PathError, match="data/count is a number"):
        walk(document, "data/count/x")
    assert walk({"0": "by key"}, "0") == "by key"


def ref(url: str, path: str, headers: dict[str, str] | None = None, check: bool = False) -> InputRef:
    data = TaskInputData(url=url, rtsp_path_in_response=path, headers=headers, certificate_check=check)
    return InputRef(kind="restful", data=data, vcn=None, index=0, field="input.data[0]",
                    task_id="t1")


def test_check_refuses_non_http_lookup_urls() -> None:
    with pytest.raises(ApiError) as caught:
        RestfulResolver().check(ref("ftp://lookup/x", "url"))
    assert caught.value.params == ["input.data[0].url"]
    with pytest.raises(ApiError) as caught:
        RestfulResolver().check(ref("http://lookup/x", "///"))
    assert caught.value.params == ["input.data[0].rtsp_path_in_response"]


@pytest.mark.integration
def test_nested_path_with_list_index_and_headers(restful_server: LookupServer) -> None:
    url = restful_server.json("/api/streams?camera=7", {"data": {"streams": [
        {"url": "rtsp://cam/sub"}, {"url": "rtsp://user:pw123@cam/main"}]}})
    target = RestfulResolver().resolve(ref(url, "data/streams/1/url", {"X-Auth-Token": "tok-abc-123"}))
    assert target.url == "rtsp://user:pw123@cam/main"
    (path, headers), = restful_server.requests
    assert path == "/api/streams?camera=7"
    assert headers["x-auth-token"] == "tok-abc-123"


@pytest.mark.integration
@pytest.mark.parametrize(("document", "path", "message"), [
    ({"data": {}}, "data/url", "no key 'url' at data"),
    ({"data": {"url": 5}}, "data/url", "is not a non-empty string"),
    ({"data": {"url": "  "}}, "data/url", "is not a non-empty string"),
    ({"data": {"url": "file:///etc/passwd"}}, "data/url", "must be an"),
    ({"data": ["rtsp://x/1"]}, "data/2", "out of range"),
])
def test_bad_replies_say_what_is_wrong(restful_server: LookupServer, document: Any, path: str,
                                       message: str) -> None:
    url = restful_server.json("/lookup", document)
    with pytest.raises(ResolveError, match=message):
        RestfulResolver().resolve(ref(url, path))


@pytest.mark.integration
def test_http_errors_name_the_status_and_5xx_is_retryable(restful_server: LookupServer) -> None:
    url = restful_server.json("/boom", {"error": "internal"}, status=500)
    with pytest.raises(ResolveError, match="answered HTTP 500") as caught:
        RestfulResolver().resolve(ref(url, "url"))
    assert caught.value.retryable
    url = restful_server.json("/denied", {"error": "no"}, status=403)
    with pytest.raises(ResolveError, match="answered HTTP 403") as caught:
        RestfulResolver().resolve(ref(url, "url"))
    assert not caught.value.retryable


@pytest.mark.integration
def test_non_json_replies_are_refused(restful_server: LookupServer) -> None:
    url = restful_server.raw("/html", b"<html>login page</html>", content_type="text/html")
    with pytest.raises(ResolveError, match="not JSON"):
        RestfulResolver().resolve(ref(url, "url"))
    url = restful_server.raw("/latin1", b'{"url": "\xff"}')
    with pytest.raises(ResolveError, match="not JSON"):
        RestfulResolver().resolve(ref(url, "url"))


@pytest.mark.integration
def test_oversized_replies_are_refused_with_or_without_content_length(restful_server: LookupServer) -> None:
    big = b'{"url": "rtsp://x/1", "pad": "' + b"x" * (1 << 20) + b'"}'
    for name, chunked in (("/declared", False), ("/chunked", True)):
        url = restful_server.raw(name, big, chunked=chunked)
        with pytest.raises(ResolveError, match="larger than 1048576 bytes"):
            RestfulResolver().resolve(ref(url, "url"))
    just_fits = b'{"url": "rtsp://x/1", "pad": "' + b"x" * ((1 << 20) - 40) + b'"}'
    assert len(just_fits) <= 1 << 20
    url = restful_server.raw("/fits", just_fits, chunked=True)
    assert RestfulResolver().resolve(ref(url, "url")).url == "rtsp://x/1"


@pytest.mark.integration
def test_slow_servers_time_out(restful_server: LookupServer) -> None:
    slow = restful_server.json("/slow", {"url": "rtsp://x/1"}, delay_s=3.0)
    with pytest.raises(ResolveError, match=r"no complete reply within 0\.5 s") as caught:
        RestfulResolver(timeout_s=0.5).resolve(ref(slow, "url"))
    assert caught.value.retryable
    # bytes that keep coming, each within the read timeout, still may not hold the lookup past its deadline
    trickle = restful_server.json("/trickle", {"url": "rtsp://x/1", "pad": "x" * 40}, trickle_s=0.05)
    with pytest.raises(ResolveError, match=r"within 0\.5 s"):
        RestfulResolver(timeout_s=0.5).resolve(ref(trickle, "url"))


@pytest.mark.integration
def test_a_server_trickling_its_headers_is_held_to_the_deadline(restful_server: LookupServer) -> None:
    # ~130 header bytes at one per 0.05 s: every read is quick, the whole head takes 6-7 s, the deadline is 1 s
    trickle = restful_server.json("/trickle-head", {"url": "rtsp://x/1"}, trickle_head_s=0.05)
    with pytest.raises(ResolveError, match=r"no complete reply within 1 s") as caught:
        RestfulResolver(timeout_s=1.0).resolve(ref(trickle, "url"))
    assert caught.value.retryable
    assert restful_server.hits("/trickle-head") == 1
    assert restful_server.trickled_heads == []  # given up during the head, not after it
    # the same server answering at once is resolved: the deadline is what cut the trickle short
    prompt = restful_server.json("/prompt", {"url": "rtsp://x/1"})
    assert RestfulResolver(timeout_s=1.0).resolve(ref(prompt, "url")).url == "rtsp://x/1"


@pytest.mark.integration
def test_redirects_are_followed_but_limited(restful_server: LookupServer) -> None:
    final = restful_server.json("/final", {"url": "rtsp://x/redirected"})
    restful_server.redirect("/r1", final)
    start = restful_server.redirect("/r0", restful_server.url("/r1"))
    assert RestfulResolver().resolve(ref(start, "url")).url == "rtsp://x/redirected"
    for hop in range(5):
        restful_server.redirect(f"/loop{hop}", restful_server.url(f"/loop{hop + 1}"))
    with pytest.raises(ResolveError, match="more than 3 redirects"):
        RestfulResolver().resolve(ref(restful_server.url("/loop0"), "url"))
    assert restful_server.hits("/loop4") == 0


@pytest.mark.integration
def test_certificate_check_verifies_the_server(restful_https: LookupServer) -> None:
    url = restful_https.json("/secure", {"url": "rtsps://cam/1"})
    assert RestfulResolver().resolve(ref(url, "url", check=False)).url == "rtsps://cam/1"
    with pytest.raises(ResolveError, match=r"(?i)certificate"):
        RestfulResolver().resolve(ref(url, "url", check=True))


@pytest.mark.integration
def test_unreachable_lookup_server_is_a_retryable_error() -> None:
    from tests.fixtures.ports import free_port

    with pytest.raises(ResolveError, match="ConnectError") as caught:
        RestfulResolver().resolve(ref(f"http://127.0.0.1:{free_port()}/x", "url"))
    assert caught.value.retryable


@pytest.mark.integration
def test_header_values_and_url_secrets_stay_out_of_errors_and_logs(
        restful_server: LookupServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    restful_server.json("/err?token=qs-token-999", {"error": "x"}, status=500)
    url = restful_server.url("/err?token=qs-token-999")
    # as in the agent, the task's header values are held by the masker while the task exists
    secrets.register("task:restful-test", ["Bearer hdr-secret-777"])
    try:
        with pytest.raises(ResolveError) as caught:
            RestfulResolver().resolve(ref(url, "url", {"Authorization": "Bearer hdr-secret-777"}))
        ok = restful_server.json("/ok", {"url": "rtsp://admin:cam-pass-555@cam/1"})
        RestfulResolver().resolve(ref(ok, "url", {"Authorization": "Bearer hdr-secret-777"}))
    finally:
        secrets.forget("task:restful-test")
    assert "answered HTTP 500" in str(caught.value)
    # httpx itself logs request URLs at INFO: the agent's log setup masks or quiets it; ours must be clean
    text = str(caught.value) + "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("agent"))
    assert "rtsp://***@cam/1" in text
    for secret in ("qs-token-999", "hdr-secret-777", "cam-pass-555"):
        assert secret not in text
