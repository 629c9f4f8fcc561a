from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from agent.sources.resolvers.base import InputRef, ResolveError
from agent.sources.resolvers.vcn import VcnResolver, tls_verify
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskInputData, TaskInputVcn
from tests.fixtures.vcn import NO_SUCH_CAMERA, WRONG_PASSWORD, TlsCert, VcnPlatform
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def ref(platform: VcnPlatform, device_id: str = "cam01#domain", stream_type: int = 1,
        password: str | None = None) -> InputRef:
    vcn = TaskInputVcn(ip=platform.host, port=platform.port, username=platform.username,
                       password=password or platform.password)
    return InputRef(kind="vcn", data=TaskInputData(device_id=device_id, stream_type=stream_type), vcn=vcn,
                    index=0, field="input.data[0]")


@pytest.fixture
def resolver() -> Iterator[VcnResolver]:
    made = VcnResolver(verify=False, timeout_s=5.0)
    yield made
    made.close()


def test_login_then_rtsp_url_with_the_documented_request(vcn_platform: VcnPlatform, resolver: VcnResolver) -> None:
    vcn_platform.cameras["cam01#domain"] = "rtsp://10.0.0.5:554/cam01?token=abc"
    target = resolver.resolve(ref(vcn_platform, stream_type=2))
    assert target.url == "rtsp://10.0.0.5:554/cam01?token=abc"
    assert target.transport == "tcp"
    assert vcn_platform.calls == [("POST", "/loginInfo/login/v1.0"), ("POST", "/video/rtspurl/v1.0")]
    assert vcn_platform.rtsp_requests == [{
        "cameraCode": "cam01#domain",
        "mediaURLParam": {"serviceType": 1, "streamType": 2, "protocolType": 2, "transMode": 0,
                          "broadCastType": 0, "packProtocolType": 1, "clientType": 1},
    }]


def test_one_session_serves_every_input_of_a_platform(vcn_platform: VcnPlatform, resolver: VcnResolver) -> None:
    for n in range(6):
        vcn_platform.cameras[f"cam{n}#d"] = f"rtsp://10.0.0.5/cam{n}"
    results: list[str] = []

    def one(n: int) -> None:
        results.append(resolver.resolve(ref(vcn_platform, f"cam{n}#d")).url)

    threads = [threading.Thread(target=one, args=(n,), name=f"vcn-test-{n}") for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [f"rtsp://10.0.0.5/cam{n}" for n in range(6)]
    assert vcn_platform.count("/loginInfo/login/v1.0") == 1
    assert vcn_platform.count("/video/rtspurl/v1.0") == 6


@pytest.mark.parametrize("code", [119101305, 119101308])
def test_password_expired_and_first_login_still_open_a_session(
        vcn_platform: VcnPlatform, resolver: VcnResolver, code: int, caplog: pytest.LogCaptureFixture) -> None:
    vcn_platform.login_code = code
    vcn_platform.cameras["cam01#domain"] = "rtsp://10.0.0.5/cam01"
    with caplog.at_level(logging.WARNING, logger="agent"):
        assert resolver.resolve(ref(vcn_platform)).url == "rtsp://10.0.0.5/cam01"
    assert "password" in caplog.text


def test_wrong_password_is_a_non_retryable_error_naming_the_code(
        vcn_platform: VcnPlatform, resolver: VcnResolver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ResolveError) as caught:
        resolver.resolve(ref(vcn_platform, password="Wrong#Pass-000"))
    assert str(WRONG_PASSWORD) in str(caught.value)
    assert not caught.value.retryable
    assert vcn_platform.count("/video/rtspurl/v1.0") == 0
    for secret in ("Wrong#Pass-000", vcn_platform.password):
        assert secret not in str(caught.value) + caplog.text


def test_a_refused_login_is_answered_from_memory_until_a_task_begins_again(
        vcn_platform: VcnPlatform, resolver: VcnResolver) -> None:
    wrong = ref(vcn_platform, password="Wrong#Pass-000")
    for _ in range(3):  # every input of the account, every lookup: one refusal, asked once
        with pytest.raises(ResolveError, match=str(WRONG_PASSWORD)) as caught:
            resolver.resolve(wrong)
        assert not caught.value.retryable
    assert vcn_platform.count("/loginInfo/login/v1.0") == 1
    resolver.begin(wrong)  # a task using the account starts again
    with pytest.raises(ResolveError, match=str(WRONG_PASSWORD)):
        resolver.resolve(wrong)
    assert vcn_platform.count("/loginInfo/login/v1.0") == 2


def test_unknown_camera_fails_with_the_platform_code_after_one_fresh_login(
        vcn_platform: VcnPlatform, resolver: VcnResolver) -> None:
    with pytest.raises(ResolveError, match=f"rtspurl for camera nope#d failed with resultCode {NO_SUCH_CAMERA}"):
        resolver.resolve(ref(vcn_platform, "nope#d"))
    assert vcn_platform.count("/loginInfo/login/v1.0") == 2


@pytest.mark.parametrize("as_http_401", [True, False])
def test_an_expired_session_is_renewed_once(vcn_platform: VcnPlatform, resolver: VcnResolver,
                                            as_http_401: bool) -> None:
    vcn_platform.session_error_as_http_401 = as_http_401
    vcn_platform.cameras["cam01#domain"] = "rtsp://10.0.0.5/cam01"
    resolver.resolve(ref(vcn_platform))
    vcn_platform.expire_sessions()
    assert resolver.resolve(ref(vcn_platform)).url == "rtsp://10.0.0.5/cam01"
    assert vcn_platform.count("/loginInfo/login/v1.0") == 2
    assert vcn_platform.count("/video/rtspurl/v1.0") == 3


def test_a_login_without_session_cookie_is_an_error(vcn_platform: VcnPlatform, resolver: VcnResolver) -> None:
    vcn_platform.send_cookie = False
    with pytest.raises(ResolveError, match="without a JSESSIONID cookie"):
        resolver.resolve(ref(vcn_platform))


def test_keepalive_keeps_the_session_and_close_logs_out(vcn_platform: VcnPlatform) -> None:
    vcn_platform.cameras["cam01#domain"] = "rtsp://10.0.0.5/cam01"
    vcn_platform.session_ttl_s = 2.0  # the session dies unless kept alive
    resolver = VcnResolver(verify=False, keepalive_s=0.1)
    try:
        resolver.resolve(ref(vcn_platform))
        # at least 3 s of keep-alives: beyond the 2 s lifetime
        wait_until(lambda: vcn_platform.count("/common/keepAlive") >= 30, 20, "30 keep-alives", interval=0.1)
        assert resolver.resolve(ref(vcn_platform)).url == "rtsp://10.0.0.5/cam01"
        assert vcn_platform.count("/loginInfo/login/v1.0") == 1
        assert [t.name for t in threading.enumerate() if t.name.startswith("vcn-keepalive-")]
    finally:
        resolver.close()
    assert vcn_platform.calls[-1] == ("GET", "/users/logout")
    assert vcn_platform.live_sessions() == 0
    assert not [t.name for t in threading.enumerate() if t.name.startswith("vcn-keepalive-")]


def test_keepalive_logs_in_again_when_the_session_was_lost(vcn_platform: VcnPlatform) -> None:
    vcn_platform.cameras["cam01#domain"] = "rtsp://10.0.0.5/cam01"
    resolver = VcnResolver(verify=False, keepalive_s=0.2)
    try:
        resolver.resolve(ref(vcn_platform))
        vcn_platform.expire_sessions()
        wait_until(lambda: vcn_platform.live_sessions() > 0, 20, "a new session", interval=0.1)
        assert vcn_platform.live_sessions() == 1
        assert vcn_platform.count("/loginInfo/login/v1.0") == 2
    finally:
        resolver.close()


def test_tls_verification_with_a_ca_file(vcn_platform: VcnPlatform, self_signed_cert: TlsCert) -> None:
    vcn_platform.cameras["cam01#domain"] = "rtsp://10.0.0.5/cam01"
    strict = VcnResolver(verify=tls_verify(True, None))
    try:
        with pytest.raises(ResolveError, match=r"(?i)certificate"):
            strict.resolve(ref(vcn_platform))
    finally:
        strict.close()
    trusting = VcnResolver(verify=tls_verify(False, self_signed_cert.cert))
    try:
        assert trusting.resolve(ref(vcn_platform)).url == "rtsp://10.0.0.5/cam01"
    finally:
        trusting.close()


def test_an_unreachable_platform_is_retryable_and_times_out() -> None:
    from tests.fixtures.ports import free_port

    resolver = VcnResolver(verify=False, timeout_s=1.0)
    platform = VcnPlatform(port=free_port())
    try:
        with pytest.raises(ResolveError) as caught:
            resolver.resolve(ref(platform))
        assert caught.value.retryable
    finally:
        resolver.close()


def test_a_changed_password_is_used_from_the_next_login(vcn_platform: VcnPlatform, resolver: VcnResolver) -> None:
    vcn_platform.cameras["cam01#domain"] = "rtsp://10.0.0.5/cam01"
    resolver.resolve(ref(vcn_platform))
    vcn_platform.password = "New#Pass-2222"
    vcn_platform.expire_sessions()
    with pytest.raises(ResolveError):
        resolver.resolve(ref(vcn_platform, password="Old#Pass-1111"))
    assert resolver.resolve(ref(vcn_platform, password="New#Pass-2222")).url == "rtsp://10.0.0.5/cam01"


def test_check_wants_a_real_port(vcn_platform: VcnPlatform) -> None:
    bad = InputRef(kind="vcn", data=TaskInputData(device_id="c", stream_type=1),
                   vcn=TaskInputVcn(ip="127.0.0.1", port=0, username="u", password="p"), index=0,
                   field="input.data[0]")
    with pytest.raises(ApiError) as caught:
        VcnResolver(verify=False).check(bad)
    assert caught.value.params == ["input.vcn.port"]


def test_keepalive_never_repeats_a_refused_login(vcn_platform: VcnPlatform) -> None:
    vcn_platform.cameras["cam01#domain"] = "rtsp://10.0.0.5/cam01"
    resolver = VcnResolver(verify=False, keepalive_s=0.1)
    try:
        resolver.resolve(ref(vcn_platform))
        vcn_platform.password = "Changed#On-Platform-9"
        vcn_platform.expire_sessions()
        wait_until(lambda: vcn_platform.count("/loginInfo/login/v1.0") >= 2, 20, "the second login")
        assert vcn_platform.count("/loginInfo/login/v1.0") == 2
        time.sleep(1.0)  # ten keep-alive periods in which a retrying loop would log in again
        assert vcn_platform.count("/loginInfo/login/v1.0") == 2  # repeated refusals would lock the account
    finally:
        resolver.close()


def test_the_session_masks_its_password_and_cookie_until_it_is_closed(vcn_platform: VcnPlatform) -> None:
    from agent.redact import mask_text

    vcn_platform.cameras["cam01#domain"] = "rtsp://10.0.0.5/cam01"
    resolver = VcnResolver(verify=False, timeout_s=5.0)
    try:
        resolver.resolve(ref(vcn_platform))
        (cookie,) = vcn_platform.sessions
        assert mask_text(f"{vcn_platform.password} {cookie}") == "*** ***"
    finally:
        resolver.close()
    assert mask_text(f"{vcn_platform.password} {cookie}") == f"{vcn_platform.password} {cookie}"
