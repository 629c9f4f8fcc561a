"""The cheap check a down stream makes every second: does anything accept a TCP connection where it plays?

A full attempt (resolve, RTSP handshake, codec probe) costs the camera a session and the agent a
demuxer; a TCP connect costs neither. The stream probes while it waits to reconnect and attempts as
soon as a camera that was away answers again (docs/inputs.md, "When a camera goes away").
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from agent.sources.reader import is_file_target
from agent.sources.target import StreamTarget

PROBE_TIMEOUT_S = 1.0

# Where a scheme listens when the URL names no port.
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}

Address = tuple[str, int]


def probe_address(target: StreamTarget) -> Address | None:
    """The host and port a target's stream connects to; None for files and URLs without one."""
    if is_file_target(target):
        return None
    try:
        parts = urlsplit(target.url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    port = port or DEFAULT_PORTS.get(parts.scheme.lower())
    return (parts.hostname, port) if port else None


def answers(address: Address, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to ``address`` is accepted within ``timeout``."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False
