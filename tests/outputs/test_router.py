from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from agent.backoff import DELIVERY_RETRY, BackoffPolicy
from agent.outputs.router import ResultRouter, check_output
from agent.settings import AgentSettings
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskOutput
from tests.fixtures.mosquitto import Broker
from tests.fixtures.webhook import Reply, WebhookReceiver
from tests.outputs.support import TASK_ID, make_event, make_settings, validate_envelope, webhook_output
from tests.waiting import wait_until

FAST = BackoffPolicy(first_s=0.05, max_s=0.5)
REPO = Path(__file__).resolve().parents[2]



@pytest.fixture
def make_router() -> Iterator[Callable[..., ResultRouter]]:
    routers: list[ResultRouter] = []

    def make(settings: AgentSettings, **kwargs: Any) -> ResultRouter:
        router = ResultRouter(settings, **{"retry": FAST, **kwargs})
        routers.append(router)
        return router

    yield make
    for router in routers:
        router.stop()


def seqs(requests: list[Any]) -> list[int]:
    return [r.json["data"]["event_set"][0]["seq"] for r in requests]


def test_check_output_refuses_event_center_without_broker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with pytest.raises(ApiError) as caught:
        check_output(settings, TaskOutput(event_center=True))
    assert caught.value.params == ["output.event_center"]
    check_output(settings, webhook_output("http://127.0.0.1:9/x"))


def test_submit_refuses_event_center_without_broker(tmp_path: Path, make_router: Any) -> None:
    router = make_router(make_settings(tmp_path))
    with pytest.raises(ValueError, match="no MQTT sink"):
        router.submit(TASK_ID, "svc", TaskOutput(event_center=True), ["cam"], [make_event()])
    assert router.status().sink("mqtt").backlog == 0


def test_unknown_input_index_is_refused(tmp_path: Path, make_router: Any) -> None:
    router = make_router(make_settings(tmp_path))
    with pytest.raises(ValueError, match="input_index 3"):
        router.submit(TASK_ID, "svc", webhook_output("http://127.0.0.1:9/x"), ["cam"], [make_event(input_index=3)])


def test_the_size_cap_drops_the_oldest_and_says_so(tmp_path: Path, make_router: Any) -> None:
    router = make_router(make_settings(tmp_path, max_bytes=1 << 20))
    output = webhook_output("http://127.0.0.1:9/never-started", ["image"])
    image = b"\xff" * 100_000
    for n in range(15):
        router.submit(TASK_ID, "svc", output, ["cam"], [make_event(n, images={"image": image})])
    status = router.status()
    webhook = status.sink("webhook")
    assert status.stored_bytes <= status.max_bytes == 1 << 20
    assert webhook.dropped_at_cap > 0
    assert webhook.backlog + webhook.dropped_at_cap == 15


@pytest.mark.integration
def test_webhook_gets_envelopes_with_headers_in_order(tmp_path: Path, make_router: Any,
                                                       webhook_receiver: WebhookReceiver) -> None:
    router = make_router(make_settings(tmp_path))
    router.start()
    output = webhook_output(webhook_receiver.url, ["image"])
    events = [make_event(n, input_index=n % 2, images={"image": b"JPEG%d" % n}) for n in range(20)]
    router.submit(TASK_ID, "c-intrusion", output, ["cam-a", "cam-b"], events)
    got = webhook_receiver.wait_for(20, timeout=20)
    assert seqs(got) == list(range(20))
    for n, request in enumerate(got):
        validate_envelope(request.json)
        assert request.headers["x-token"] == "s3cret-token-value"
        assert request.headers["content-type"] == "application/json"
        assert request.json["stream_id"] == ("cam-a", "cam-b")[n % 2]
        assert base64.b64decode(request.json["image_base64"]) == b"JPEG%d" % n
    assert webhook_receiver.connections == 1  # keep-alive: one connection for all 20
    wait_until(lambda: router.status().sink("webhook").delivered == 20, 10, "delivered count")
    status = router.status().sink("webhook")
    assert (status.backlog, status.failed, status.dead_letters) == (0, 0, 0)


@pytest.mark.integration
def test_webhook_500_then_200_is_delivered_once_healed(tmp_path: Path, make_router: Any,
                                                         webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.fail_next(4, 500)
    router = make_router(make_settings(tmp_path))
    router.start()
    router.submit(TASK_ID, "svc", webhook_output(webhook_receiver.url), ["cam"], [make_event(n) for n in range(5)])
    got = webhook_receiver.wait_for(5, timeout=30)
    assert seqs(got) == [0, 1, 2, 3, 4]
    for request in webhook_receiver.requests:
        validate_envelope(request.json)
    assert [r.status for r in webhook_receiver.requests[:4]] == [500] * 4
    assert {r.json["message_id"] for r in webhook_receiver.requests[:4]} == {got[0].json["message_id"]}
    wait_until(lambda: router.status().sink("webhook").backlog == 0, 10, "backlog drained")
    assert router.status().sink("webhook").failed == 4


@pytest.mark.integration
def test_retry_after_429_is_honoured(tmp_path: Path, make_router: Any, webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.script(Reply(429, headers={"Retry-After": "1"}))
    router = make_router(make_settings(tmp_path))
    router.start()
    router.submit(TASK_ID, "svc", webhook_output(webhook_receiver.url), ["cam"], [make_event()])
    got = webhook_receiver.wait_for(1, timeout=20)
    first, second = webhook_receiver.requests[0], got[0]
    assert second.received_at - first.received_at >= 0.9  # not the 0.05 s back-off of FAST


@pytest.mark.integration
def test_slow_webhook_times_out_then_succeeds(tmp_path: Path, make_router: Any,
                                              webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.script(Reply(200, delay_s=1.5), Reply(200, delay_s=1.5))
    router = make_router(make_settings(tmp_path), webhook_timeout_s=0.5)
    router.start()
    router.submit(TASK_ID, "svc", webhook_output(webhook_receiver.url), ["cam"], [make_event(n) for n in range(3)])
    wait_until(lambda: router.status().sink("webhook").backlog == 0, 30, "backlog drained")
    status = router.status().sink("webhook")
    assert status.failed >= 2 and status.delivered == 3 and status.dead_letters == 0
    answered_in_time = [r for r in webhook_receiver.requests if r.delay_s == 0]
    assert seqs(answered_in_time) == [0, 1, 2]
    for request in webhook_receiver.requests:
        validate_envelope(request.json)


@pytest.mark.integration
def test_400_goes_to_dead_letters_and_the_lane_moves_on(tmp_path: Path, make_router: Any,
                                                         webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.script(Reply(400, body=b"bad"))
    router = make_router(make_settings(tmp_path))
    router.start()
    router.submit(TASK_ID, "svc", webhook_output(webhook_receiver.url), ["cam"], [make_event(n) for n in range(3)])
    got = webhook_receiver.wait_for(2, timeout=20)
    assert seqs(got) == [1, 2]
    wait_until(lambda: router.status().sink("webhook").dead_letters == 1, 10, "dead letter")
    [letter] = router.dead_letters()
    assert letter["reason"].startswith("HTTP 400") and letter["envelope"]["data"]["event_set"][0]["seq"] == 0
    assert letter["destination"]["headers"] == {"X-Token": "***"}
    assert "s3cret-token-value" not in repr(letter) and "s3cret-token-value" not in repr(router.status())
    validate_envelope(letter["envelope"])


@pytest.mark.integration
def test_header_values_never_reach_the_log(tmp_path: Path, make_router: Any, webhook_receiver: WebhookReceiver,
                                           caplog: pytest.LogCaptureFixture) -> None:
    webhook_receiver.script(Reply(500), Reply(403))
    router = make_router(make_settings(tmp_path))
    router.start()
    with caplog.at_level("DEBUG"):
        router.submit(TASK_ID, "svc", webhook_output(webhook_receiver.url), ["cam"], [make_event()])
        wait_until(lambda: router.status().sink("webhook").dead_letters == 1, 20, "dead letter")
    assert "HTTP 500" in caplog.text and "HTTP 403" in caplog.text
    assert "s3cret-token-value" not in caplog.text


@pytest.mark.integration
def test_dead_webhook_does_not_hold_back_mqtt_or_other_tasks(tmp_path: Path, make_router: Any, mosquitto: Broker,
                                                              webhook_receiver: WebhookReceiver,
                                                              subscriber_factory: Any) -> None:
    settings = make_settings(tmp_path, mosquitto)
    subscriber = subscriber_factory(mosquitto.host, mosquitto.port, f"{settings.topic_prefix}/events/#",
                                    client_id=f"sub-{tmp_path.name}")
    router = make_router(settings)
    router.start()
    dead = TaskOutput(webhook={"url": f"http://127.0.0.1:{webhook_receiver.port + 0}/dead",
                               "headers": {"A": "b"}}, event_center=True)
    webhook_receiver.default = Reply(503)
    other_task = "f" * 32
    router.submit(TASK_ID, "svc", dead, ["cam"], [make_event(n, images={"image": b"J"}) for n in range(10)])
    got = subscriber.wait_for(lambda m: len(m) >= 10, timeout=20)
    assert [p["data"]["event_set"][0]["seq"] for _, p in got] == list(range(10))
    assert all("image_base64" not in p for _, p in got)  # event_center has no data_category: no images
    assert all(topic == f"{settings.topic_prefix}/events/{TASK_ID}" for topic, _ in got)
    for _, payload in got:
        validate_envelope(payload)
    healthy = WebhookReceiver()
    healthy.start()
    try:
        router.submit(other_task, "svc", webhook_output(healthy.url), ["cam"], [make_event(0)])
        healthy.wait_for(1, timeout=20)
    finally:
        healthy.stop()
    # a row leaves the outbox a moment after its peer saw it (on the 2xx, on the PUBACK)
    wait_until(lambda: router.status().sink("webhook").backlog == 10, 10, "the healthy task's event delivered")
    wait_until(lambda: router.status().sink("mqtt").backlog == 0, 10, "every MQTT event acknowledged")
    status = router.status()
    assert status.mqtt_connected is True
    assert status.sink("mqtt").backlog == 0 and status.sink("webhook").backlog == 10


@pytest.mark.integration
def test_a_slow_webhook_does_not_hold_back_another_tasks_webhook(tmp_path: Path, make_router: Any,
                                                                webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.default = Reply(200, delay_s=6.0)  # slow but within the timeout: never backed off
    fast = WebhookReceiver()
    fast.start()
    try:
        router = make_router(make_settings(tmp_path), webhook_timeout_s=10)
        router.start()
        router.submit(TASK_ID, "svc", webhook_output(webhook_receiver.url), ["cam"],
                      [make_event(n) for n in range(3)])
        wait_until(lambda: webhook_receiver.connections >= 1, 10, "a worker inside the slow lane's first request")
        router.submit("f" * 32, "svc", webhook_output(fast.url), ["cam"], [make_event(n) for n in range(5)])
        # well before the slow request ends: another worker served the fast task
        assert seqs(fast.wait_for(5, timeout=3)) == [0, 1, 2, 3, 4]
        assert webhook_receiver.requests == []
    finally:
        fast.stop()


def _outage_settings(broker: Broker, tmp_path: Path) -> AgentSettings:
    """Give the private broker persistence so the test's subscriber session survives its restart."""
    store = tmp_path / "mosquitto-store"
    store.mkdir()
    broker.stop()
    # autosave after every change: the session must be on disk even if a loaded box makes the fixture
    # SIGKILL the broker instead of waiting for its orderly save at exit. "user root": started as root,
    # mosquitto would drop to user mosquitto, which may not write into pytest's 0700 tmp dirs (no effect
    # when the tests do not run as root).
    broker.conf.write_text(broker.conf.read_text() + f"persistence true\npersistence_location {store}/\n"
                           "autosave_on_changes true\nautosave_interval 1\nuser root\n")
    broker.start()
    return make_settings(tmp_path / "state", broker)


def _broker_outage(broker: Broker, tmp_path: Path, make_router: Any, subscriber_factory: Any,
                   outage_s: float) -> None:
    settings = _outage_settings(broker, tmp_path)
    subscriber = subscriber_factory(broker.host, broker.port, f"{settings.topic_prefix}/events/#",
                                    client_id="outage-sub", persistent=True)
    store = tmp_path / "mosquitto-store" / "mosquitto.db"
    wait_until(store.exists, 10, "broker saved the subscriber's session")
    router = make_router(settings, mqtt_reconnect_max_s=2)
    router.start()
    output = TaskOutput(event_center=True)
    wait_until(lambda: router.status().mqtt_connected is True, 10, "events connection")
    seq = 0
    while seq < 50:
        router.submit(TASK_ID, "svc", output, ["cam"], [make_event(seq)])
        seq += 1
    subscriber.wait_for(lambda m: len(m) >= 50, timeout=20)
    outage_from = seq
    broker.stop()
    outage_end = time.monotonic() + outage_s
    while time.monotonic() < outage_end:  # events keep flowing while the broker is away
        router.submit(TASK_ID, "svc", output, ["cam"], [make_event(seq)])
        seq += 1
        time.sleep(0.02)
    assert router.status().mqtt_connected is False
    assert router.status().sink("mqtt").backlog > 0
    broker.start()
    for _ in range(50):
        router.submit(TASK_ID, "svc", output, ["cam"], [make_event(seq)])
        seq += 1
    total = seq
    try:
        got = subscriber.wait_for(lambda m: len({p["message_id"] for _, p in m}) >= total, timeout=60)
    except TimeoutError:
        seen = {p["data"]["event_set"][0]["seq"] for _, p in subscriber.messages}
        missing = sorted(set(range(total)) - seen)
        pytest.fail(f"missing {len(missing)} of {total}: {missing[:20]}; outage from seq {outage_from}; "
                    f"{router.status()}; subscriber: {subscriber.events}; now {time.monotonic():.1f}")
    first_seen: list[int] = []
    ids: set[str] = set()
    for _, payload in got:
        validate_envelope(payload)
        if payload["message_id"] not in ids:
            ids.add(payload["message_id"])
            first_seen.append(payload["data"]["event_set"][0]["seq"])
    assert first_seen == list(range(total))  # all delivered, in order (duplicates allowed: at least once)
    wait_until(lambda: router.status().sink("mqtt").backlog == 0, 20, "backlog drained")


@pytest.mark.integration
def test_broker_outage_short(private_mosquitto: Broker, tmp_path: Path, make_router: Any,
                             subscriber_factory: Any) -> None:
    _broker_outage(private_mosquitto, tmp_path, make_router, subscriber_factory, outage_s=4)


@pytest.mark.integration
@pytest.mark.slow
def test_broker_outage_30_s(private_mosquitto: Broker, tmp_path: Path, make_router: Any,
                            subscriber_factory: Any) -> None:
    _broker_outage(private_mosquitto, tmp_path, make_router, subscriber_factory, outage_s=30)


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from agent.backoff import BackoffPolicy
    from agent.outputs.router import ResultRouter
    from tests.outputs.support import TASK_ID, make_event, make_settings, webhook_output
    router = ResultRouter(make_settings(Path({state!r})), retry=BackoffPolicy(0.05, 0.2))
    router.start()  # the webhook is down: every attempt fails while we commit
    output = webhook_output({url!r}, ["image"])
    for n in range(1000):
        router.submit(TASK_ID, "svc", output, ["cam"], [make_event(n, images={{"image": b"JPEG%d" % n}})])
        if n % 100 == 99:
            print(n + 1, flush=True)
    time.sleep(600)
""")


@pytest.mark.integration
def test_kill_9_with_1000_undelivered_then_all_delivered(tmp_path: Path, make_router: Any) -> None:
    receiver = WebhookReceiver()  # not started yet: the webhook is down
    state = tmp_path / "state"
    script = CHILD.format(repo=str(REPO), state=str(state), url=receiver.url)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "1000":
                break
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    with closing(sqlite3.connect(state / "outbox.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    receiver.start()
    try:
        router = make_router(make_settings(state))
        assert router.status().sink("webhook").backlog == 1000
        router.start()
        got = receiver.wait_for(1000, timeout=120)
        wait_until(lambda: router.status().sink("webhook").backlog == 0, 30, "backlog drained")
    finally:
        receiver.stop()
    first_seen: dict[str, int] = {}
    for request in got:
        assert request.headers["x-token"] == "s3cret-token-value"  # the destination survived the kill
        validate_envelope(request.json)
        n = request.json["data"]["event_set"][0]["seq"]
        assert base64.b64decode(request.json["image_base64"]) == b"JPEG%d" % n  # not corrupt
        first_seen.setdefault(request.json["message_id"], n)
    assert len(first_seen) == 1000  # every message_id seen, none missing
    assert sorted(first_seen.values()) == list(range(1000))
    assert list(first_seen.values()) == list(range(1000))  # and in order


def test_delivery_retries_double_from_1_s_to_5_min_with_jitter() -> None:
    for failures, plain in ((0, 1.0), (1, 2.0), (2, 4.0), (8, 256.0), (9, 300.0), (1000, 300.0)):
        delays = {DELIVERY_RETRY.delay(failures) for _ in range(50)}
        assert all(plain * 0.8 <= d <= plain * 1.2 for d in delays)
        assert len(delays) > 1  # jittered


@pytest.mark.integration
def test_kill_9_while_delivering_loses_nothing(tmp_path: Path, make_router: Any,
                                               webhook_receiver: WebhookReceiver) -> None:
    """Killed between a POST and its removal from the outbox: redelivered (at least once), never lost."""
    webhook_receiver.default = Reply(200, delay_s=0.01)
    state = tmp_path / "state"
    script = CHILD.format(repo=str(REPO), state=str(state), url=webhook_receiver.url).replace(
        "range(1000)", "range(300)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "300":
                break  # all committed
        webhook_receiver.wait_for(100, timeout=60)
        assert len(webhook_receiver.requests) < 300  # killed mid-delivery
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    router = make_router(make_settings(state))
    router.start()
    wait_until(lambda: router.status().sink("webhook").backlog == 0, 60, "backlog drained")
    first_seen: dict[str, int] = {}
    for request in webhook_receiver.delivered():
        validate_envelope(request.json)
        first_seen.setdefault(request.json["message_id"], request.json["data"]["event_set"][0]["seq"])
    assert list(first_seen.values()) == list(range(300))
