from __future__ import annotations

import email.utils
import time

import pytest

from agent.outputs.webhook import Outcome, WebhookClient, _retry_after, classify
from tests.fixtures.ports import free_port
from tests.fixtures.webhook import Reply, WebhookReceiver


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (400, Outcome.PERMANENT), (401, Outcome.PERMANENT),
    (404, Outcome.PERMANENT), (408, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY),
    (503, Outcome.RETRY), (302, Outcome.RETRY),
])
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_retry_after_forms() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after("99999") == 300.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = _retry_after(email.utils.formatdate(time.time() + 60, usegmt=True))
    assert later is not None and 50 <= later <= 61


@pytest.mark.integration
def test_post_reuses_one_connection_and_sends_headers(webhook_receiver: WebhookReceiver) -> None:
    client = WebhookClient()
    try:
        for n in range(5):
            result = client.post(webhook_receiver.url, {"Authorization": "Bearer tok-123"}, b'{"n":%d}' % n)
            assert result.outcome is Outcome.DELIVERED
    finally:
        client.close()
    requests = webhook_receiver.requests
    assert [r.json["n"] for r in requests] == list(range(5))
    assert all(r.headers["authorization"] == "Bearer tok-123" for r in requests)
    assert webhook_receiver.connections == 1


@pytest.mark.integration
def test_failures_are_classified_and_reasons_hold_no_header_values(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.script(Reply(503, headers={"Retry-After": "2"}), Reply(400), Reply(200, delay_s=1.0))
    client = WebhookClient(timeout_s=0.3)
    headers = {"X-Api-Key": "very-secret-value"}
    try:
        busy = client.post(webhook_receiver.url, headers, b"{}")
        bad = client.post(webhook_receiver.url, headers, b"{}")
        slow = client.post(webhook_receiver.url, headers, b"{}")
        refused = client.post(f"http://127.0.0.1:{free_port()}/x", headers, b"{}")
    finally:
        client.close()
    assert (busy.outcome, busy.retry_after_s) == (Outcome.RETRY, 2.0)
    assert bad.outcome is Outcome.PERMANENT and bad.reason.startswith("HTTP 400")
    assert slow.outcome is Outcome.RETRY and "timeout" in slow.reason
    assert refused.outcome is Outcome.RETRY and "ConnectError" in refused.reason
    for result in (busy, bad, slow, refused):
        assert "very-secret-value" not in result.reason


@pytest.mark.integration
def test_tls_is_verified(webhook_receiver: WebhookReceiver) -> None:
    """https to a server that does not speak TLS fails (retried later), it never falls back to http."""
    client = WebhookClient(timeout_s=2)
    try:
        result = client.post(f"https://127.0.0.1:{webhook_receiver.port}/hook", {"A": "b"}, b"{}")
    finally:
        client.close()
    assert result.outcome is Outcome.RETRY
    assert webhook_receiver.requests == []


def test_url_credentials_are_masked_in_reasons() -> None:
    client = WebhookClient(timeout_s=1)
    try:
        result = client.post(f"http://user:pa55word@127.0.0.1:{free_port()}/x?token=abc123", {}, b"{}")
    finally:
        client.close()
    assert "pa55word" not in result.reason and "abc123" not in result.reason


@pytest.mark.integration
def test_non_ascii_values_go_as_utf8_and_broken_headers_are_permanent(webhook_receiver: WebhookReceiver) -> None:
    client = WebhookClient(timeout_s=2)
    try:
        sent = client.post(webhook_receiver.url, {"X-Name": "Zoë"}, b"{}")
        injected = client.post(webhook_receiver.url, {"X-Evil": "a\r\nHost: elsewhere"}, b"{}")
        bad_name = client.post(webhook_receiver.url, {"Bad Name": "v"}, b"{}")
        bad_scheme = client.post("ftp://127.0.0.1/x", {"A": "b"}, b"{}")
    finally:
        client.close()
    assert sent.outcome is Outcome.DELIVERED
    assert webhook_receiver.requests[0].headers["x-name"].encode("latin-1").decode("utf-8") == "Zoë"
    for result in (injected, bad_name, bad_scheme):
        assert result.outcome is Outcome.PERMANENT
    assert "elsewhere" not in injected.reason and "X-Evil" in injected.reason
    assert len(webhook_receiver.requests) == 1  # nothing broken left the box
