"""The sd_notify protocol, spoken directly: one datagram to ``$NOTIFY_SOCKET`` per message.

No libsystemd binding: the protocol is a newline-separated ``KEY=value`` datagram sent to an
AF_UNIX socket whose path systemd puts in the environment (a leading ``@`` names a socket in the
abstract namespace). Without ``$NOTIFY_SOCKET`` (not started by systemd, or ``Type=`` other than
notify) every call is a no-op that returns False, so callers never need to ask first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
SEND_TIMEOUT_S = 2.0


def _socket_address(raw: str) -> str | None:
    if raw.startswith("@"):
        # Abstract namespace: systemd writes '@', the kernel wants a leading NUL byte.
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # vsock:… and other transports systemd may hand to VMs are not for an agent on a box.
    return None


def notify(message: str) -> bool:
    """Send one sd_notify datagram (e.g. ``"READY=1\\nSTATUS=up"``); True when it was sent."""
    raw = os.environ.get(NOTIFY_SOCKET_ENV)
    if not raw:
        return False
    address = _socket_address(raw)
    if address is None:
        log.warning("sd_notify: unsupported NOTIFY_SOCKET %r", raw)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # A datagram to a full queue blocks; a stuck systemd must not stall start-up or shutdown.
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(message.encode("utf-8"), address)
    except OSError as exc:
        # systemd gone or the socket not reachable from our namespace: the agent keeps running.
        log.warning("sd_notify to %s failed: %s", raw, exc)
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """READY=1: the API and the stored tasks are up (Type=notify start-up ends here)."""
    return notify("READY=1" if status_text is None else f"READY=1\nSTATUS={_one_line(status_text)}")


def stopping() -> bool:
    """STOPPING=1: an orderly shutdown has begun (systemd then waits up to TimeoutStopSec=)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """STATUS=…: the one line ``systemctl status`` shows. Callers mask secrets before."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog() -> bool:
    """WATCHDOG=1: one keep-alive ping."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """WatchdogSec= in seconds when systemd expects pings from this process, else None."""
    usec = os.environ.get(WATCHDOG_USEC_ENV)
    if not usec:
        return None
    pid = os.environ.get(WATCHDOG_PID_ENV)
    # WATCHDOG_PID names the process the watchdog is meant for; a child that inherited the
    # environment must not ping on its parent's behalf.
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("sd_notify: ignoring malformed %s=%r", WATCHDOG_USEC_ENV, usec)
        return None
    if value <= 0:
        return None
    return value / 1_000_000


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment in the datagram.
    return " ".join(text.splitlines())


class Watchdog:
    """Pings WATCHDOG=1 every ``interval_s / 2`` while ``healthy()`` is True.

    When ``healthy()`` returns False (or raises) the pings stop, so systemd kills and restarts
    the agent after WatchdogSec= — the point of a watchdog: a wedged loop must not be kept alive
    by a thread that merely still runs.
    """

    def __init__(
        self,
        interval_s: float,
        healthy: Callable[[], bool],
        *,
        send: Callable[[], bool] = watchdog,
        name: str = "sd-watchdog",
    ) -> None:
        if interval_s <= 0:
            raise ValueError("watchdog interval_s must be > 0")
        self.interval_s = interval_s
        self._healthy = healthy
        self._send = send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._pings = 0
        self._missed = 0

    @classmethod
    def from_environment(cls, healthy: Callable[[], bool]) -> Watchdog | None:
        """A watchdog for WatchdogSec= when systemd asked for one, else None."""
        interval = watchdog_interval()
        return None if interval is None else cls(interval, healthy)

    @property
    def period_s(self) -> float:
        return self.interval_s / 2

    @property
    def pings(self) -> int:
        """WATCHDOG=1 datagrams sent so far."""
        return self._pings

    @property
    def missed(self) -> int:
        """Periods in which the health check said no, so no ping was sent."""
        return self._missed

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 5.0) -> bool:
        """Wait for the thread to end; True when it did."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _is_healthy(self) -> bool:
        try:
            return bool(self._healthy())
        except Exception:
            log.exception("watchdog health check raised; counting it as unhealthy")
            return False

    def _run(self) -> None:
        was_healthy = True
        while not self._stop.is_set():
            if self._is_healthy():
                if not was_healthy:
                    log.warning("watchdog: agent healthy again, pings resume")
                was_healthy = True
                if self._send():
                    self._pings += 1
            else:
                if was_healthy:
                    log.error(
                        "watchdog: agent unhealthy, withholding WATCHDOG=1 (systemd restarts it after %.0f s)",
                        self.interval_s,
                    )
                was_healthy = False
                self._missed += 1
            self._stop.wait(self.period_s)
