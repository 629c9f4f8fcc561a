"""POST one envelope to a task's webhook: keep-alive connections, 10 s timeout, TLS verified.

Only the masked URL and the status ever reach a log line or a failure reason; header values never do
(they are also registered with ``agent.redact.secrets`` as the task's secrets).
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import httpx

from agent.outputs.outbox import QueuedMessage
from agent.redact import mask_text, mask_url
from agent.tasks.model import HEADER_NAME_RE, HEADER_VALUE_FORBIDDEN

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
MAX_RETRY_AFTER_S = 300.0


class Outcome(str, Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # 5xx, 408, 429, timeouts, connection errors: the server may heal
    PERMANENT = "permanent"  # other 4xx: the request itself is wrong; retrying cannot help


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    reason: str  # safe to log and store: status or error class, masked URL
    retry_after_s: float | None = None


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if 400 <= status < 500 and status not in (408, 429):
        return Outcome.PERMANENT
    return Outcome.RETRY


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER_S)


class WebhookClient:
    """Keep-alive connection pool (one per origin) shared by every webhook of the delivery thread.

    It drives httpx's transport directly: the Client layer on top adds cookie, redirect and auth handling
    that a webhook must not have, and costs about a third of the throughput (docs/benchmarks.md, "Outbox throughput").
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, verify: bool | str = True) -> None:
        self._transport = httpx.HTTPTransport(
            verify=verify,
            limits=httpx.Limits(max_keepalive_connections=32, keepalive_expiry=60.0),
        )
        self._extensions = {"timeout": httpx.Timeout(timeout_s).as_dict()}

    def close(self) -> None:
        self._transport.close()

    def post(self, url: str, headers: Mapping[str, str], payload: bytes) -> DeliveryResult:
        encoded = _encode_headers(headers)
        if isinstance(encoded, str):
            return DeliveryResult(Outcome.PERMANENT, encoded)
        try:
            request = httpx.Request("POST", url, content=payload, headers=encoded, extensions=self._extensions)
        except (httpx.InvalidURL, ValueError) as exc:
            return DeliveryResult(Outcome.PERMANENT, f"invalid webhook URL {mask_url(url)}: {type(exc).__name__}")
        try:
            response = self._transport.handle_request(request)
            try:
                response.read()  # the connection goes back to the pool only once the body is consumed
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            return DeliveryResult(Outcome.RETRY, f"timeout ({type(exc).__name__}) posting to {mask_url(url)}")
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            return DeliveryResult(Outcome.PERMANENT, f"{type(exc).__name__} posting to {mask_url(url)}")
        except httpx.HTTPError as exc:
            return DeliveryResult(
                Outcome.RETRY, f"{type(exc).__name__} posting to {mask_url(url)}: {mask_text(str(exc))[:200]}"
            )
        outcome = classify(response.status_code)
        reason = f"HTTP {response.status_code} from {mask_url(url)}"
        if outcome is Outcome.DELIVERED:
            return DeliveryResult(outcome, reason)
        return DeliveryResult(outcome, reason, _retry_after(response.headers.get("Retry-After")))


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]] | str:
    """The request headers as bytes, or why they cannot be sent (naming the header, never its value).

    The task model already refuses bad headers; this guards queued rows and callers that bypass it, and
    sends non-ASCII values as UTF-8 (httpx would refuse them) rather than never delivering the event.
    """
    encoded = [(b"User-Agent", b"edge-agent")]
    for name, value in headers.items():
        if not HEADER_NAME_RE.match(name):
            return "invalid webhook header name"
        if HEADER_VALUE_FORBIDDEN.search(value):
            return f"webhook header {name} holds CR, LF or NUL"
        if name.lower() not in ("content-type", "user-agent"):
            encoded.append((name.encode("ascii"), value.encode("utf-8")))
        elif name.lower() == "user-agent":
            encoded[0] = (b"User-Agent", value.encode("utf-8"))
    encoded.append((b"Content-Type", b"application/json"))
    return encoded


class WebhookSender:
    """Posts a lane's rows in order over one keep-alive client; one per delivery thread (``LaneSender``).

    It stops at the first row to retry (the lane waits) and once ``slice_s`` is spent: a destination that
    answers after 9 s must not keep one worker on its lane for minutes.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, slice_s: float = 1.0) -> None:
        self._client = WebhookClient(timeout_s=timeout_s)
        self._slice_s = slice_s

    def send(self, messages: Sequence[QueuedMessage]) -> list[DeliveryResult]:
        turn_ends = time.monotonic() + self._slice_s
        results: list[DeliveryResult] = []
        for message in messages:
            destination = message.destination
            result = self._client.post(str(destination["url"]), dict(destination["headers"]), message.payload)
            results.append(result)
            if result.outcome is Outcome.RETRY or time.monotonic() > turn_ends:
                break
        return results

    def close(self) -> None:
        self._client.close()
