"""sd_notify against a real AF_UNIX datagram socket playing systemd's side."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime import sdnotify
from tests.waiting import wait_until


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET, as systemd binds it."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self, timeout: float = 5.0) -> str:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(4096)
        return data.decode("utf-8")

    def drain(self) -> list[str]:
        messages = []
        self.sock.setblocking(False)
        try:
            while True:
                messages.append(self.sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return messages
        finally:
            self.sock.setblocking(True)


@pytest.fixture
def systemd_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    # A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdn-", dir="/tmp") as folder:
        path = str(Path(folder) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            yield FakeSystemd(sock, path)
        finally:
            sock.close()


@pytest.fixture
def abstract_systemd_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        yield FakeSystemd(sock, "@" + name)
    finally:
        sock.close()


def test_without_notify_socket_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False


def test_ready_status_stopping_arrive_as_datagrams(systemd_socket: FakeSystemd) -> None:
    assert sdnotify.ready() is True
    assert systemd_socket.receive() == "READY=1"
    assert sdnotify.status("2 tasks running") is True
    assert systemd_socket.receive() == "STATUS=2 tasks running"
    assert sdnotify.stopping() is True
    assert systemd_socket.receive() == "STOPPING=1"
    assert sdnotify.watchdog() is True
    assert systemd_socket.receive() == "WATCHDOG=1"


def test_ready_with_status_and_multiline_status_stay_one_assignment(systemd_socket: FakeSystemd) -> None:
    sdnotify.ready("api on 127.0.0.1:8080")
    assert systemd_socket.receive() == "READY=1\nSTATUS=api on 127.0.0.1:8080"
    sdnotify.status("line one\nWATCHDOG=1")
    # The injected line must not become a second assignment that systemd would act on.
    assert systemd_socket.receive() == "STATUS=line one WATCHDOG=1"


def test_abstract_namespace_socket(abstract_systemd_socket: FakeSystemd) -> None:
    assert abstract_systemd_socket.env_value.startswith("@")
    assert sdnotify.ready() is True
    assert abstract_systemd_socket.receive() == "READY=1"


def test_unreachable_socket_returns_false_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", f"/tmp/no-such-dir-{uuid.uuid4().hex}/notify")
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.notify("READY=1") is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 30.0),
        ("30000000", "self", 30.0),
        ("30000000", "1", None),
        ("500000", None, 0.5),
        ("0", None, None),
        ("thirty", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_from_environment(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert sdnotify.watchdog_interval() == expected



def test_watchdog_pings_only_while_healthy(systemd_socket: FakeSystemd) -> None:
    healthy = threading.Event()
    healthy.set()
    dog = sdnotify.Watchdog(0.1, healthy.is_set, name="test-sd-watchdog")
    assert dog.period_s == pytest.approx(0.05)
    dog.start()
    try:
        for _ in range(3):
            assert systemd_socket.receive() == "WATCHDOG=1"

        healthy.clear()
        # Once a period has been judged unhealthy, any ping in flight has already been sent.
        missed_before = dog.missed
        wait_until(lambda: dog.missed > missed_before)
        systemd_socket.drain()
        pings_while_sick = dog.pings
        wait_until(lambda: dog.missed >= missed_before + 5)
        assert systemd_socket.drain() == []
        assert dog.pings == pings_while_sick

        healthy.set()
        assert systemd_socket.receive() == "WATCHDOG=1"
    finally:
        dog.stop()
        assert dog.join(5.0)
    assert dog.pings >= 4


def test_health_check_that_raises_counts_as_unhealthy(systemd_socket: FakeSystemd) -> None:
    def broken() -> bool:
        raise RuntimeError("supervisor state unreadable")

    dog = sdnotify.Watchdog(0.1, broken)
    dog.start()
    try:
        wait_until(lambda: dog.missed >= 3)
    finally:
        dog.stop()
        assert dog.join(5.0)
    assert dog.pings == 0
    assert systemd_socket.drain() == []


def test_watchdog_thread_is_named_and_stops_promptly(systemd_socket: FakeSystemd) -> None:
    # A long period: stop() must wake the thread instead of waiting the period out.
    dog = sdnotify.Watchdog(600.0, lambda: True, name="sd-watchdog-under-test")
    dog.start()
    assert systemd_socket.receive() == "WATCHDOG=1"
    assert "sd-watchdog-under-test" in [thread.name for thread in threading.enumerate()]
    started = time.monotonic()
    dog.stop()
    assert dog.join(5.0)
    assert time.monotonic() - started < 5.0


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.Watchdog.from_environment(lambda: True) is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    dog = sdnotify.Watchdog.from_environment(lambda: True)
    assert dog is not None
    assert dog.interval_s == 30.0
    assert dog.period_s == 15.0


def test_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        sdnotify.Watchdog(0, lambda: True)


def test_a_receiver_that_stops_reading_does_not_block_the_sender(systemd_socket: FakeSystemd) -> None:
    # systemd hung: its queue fills up. A send then gives up after SEND_TIMEOUT_S instead of blocking.
    sent = 0
    while sent < 100_000 and sdnotify.status("x" * 1000):
        sent += 1
    assert sent > 0
    assert sent < 100_000, "the queue never filled"
    started = time.monotonic()
    assert sdnotify.status("still stuck") is False
    assert time.monotonic() - started < 30
    # Once systemd reads again, messages flow.
    systemd_socket.drain()
    assert sdnotify.ready() is True
