from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.outputs.outbox import ROW_OVERHEAD, NewMessage, Outbox, Sink

HOOK = {"url": "http://127.0.0.1:9/hook", "headers": {"X-Token": "s3cret"}}
TOPIC = {"topic": "p/events/t"}


def _msg(sink: Sink, task: str, n: int, size: int = 10) -> NewMessage:
    return NewMessage(sink, task, f"m-{task}-{n}", HOOK if sink is Sink.WEBHOOK else TOPIC,
                      (b"%d:" % n).ljust(size, b"x"))


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "state" / "outbox.db")
    yield box
    box.close()


def test_files_are_private(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "state" / "outbox.db")
    box.add([_msg(Sink.WEBHOOK, "t", 1)])
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    for name in ("outbox.db", "outbox.db-wal"):
        assert stat.S_IMODE(os.stat(tmp_path / "state" / name).st_mode) == 0o600
    box.close()


def test_lanes_are_per_sink_and_task_and_ordered(outbox: Outbox) -> None:
    outbox.add([_msg(Sink.WEBHOOK, "a", n) for n in range(3)] + [_msg(Sink.MQTT, "a", n) for n in range(2)])
    outbox.add([_msg(Sink.WEBHOOK, "b", n) for n in range(2)])
    ready, _ = outbox.ready_lanes(Sink.WEBHOOK, time.time())
    assert ready == ["a", "b"]
    assert [m.message_id for m in outbox.lane(Sink.WEBHOOK, "a", 10)] == ["m-a-0", "m-a-1", "m-a-2"]
    assert [m.message_id for m in outbox.after(Sink.MQTT, 0, 10)] == ["m-a-0", "m-a-1"]
    assert outbox.lane(Sink.WEBHOOK, "a", 1)[0].destination == HOOK


def test_a_failed_head_holds_its_lane_only(outbox: Outbox) -> None:
    outbox.add([_msg(Sink.WEBHOOK, "a", 0), _msg(Sink.WEBHOOK, "b", 0), _msg(Sink.MQTT, "a", 0)])
    head = outbox.lane(Sink.WEBHOOK, "a", 1)[0]
    outbox.retry_later(head, 60, "HTTP 500")
    ready, next_due = outbox.ready_lanes(Sink.WEBHOOK, time.time())
    assert ready == ["b"]
    assert next_due is not None and next_due > time.time() + 50
    assert outbox.lane(Sink.WEBHOOK, "a", 1)[0].attempts == 1
    assert outbox.stats(Sink.WEBHOOK).failed == 1
    assert outbox.stats(Sink.MQTT).failed == 0


def test_ack_deletes_and_counts(outbox: Outbox) -> None:
    outbox.add([_msg(Sink.WEBHOOK, "a", n) for n in range(4)])
    rows = outbox.lane(Sink.WEBHOOK, "a", 10)
    assert outbox.ack(Sink.WEBHOOK, [rows[0].row_id, rows[1].row_id]) == 2
    assert outbox.ack(Sink.WEBHOOK, [rows[0].row_id]) == 0  # already gone: not counted twice
    stats = outbox.stats(Sink.WEBHOOK)
    assert (stats.backlog, stats.delivered) == (2, 2)
    assert stats.oldest_undelivered_age_s is not None and stats.oldest_undelivered_age_s >= 0


def test_dead_letter_moves_the_row_without_secrets(outbox: Outbox) -> None:
    outbox.add([NewMessage(Sink.WEBHOOK, "a", "m1", HOOK, b'{"message_id":"m1"}')])
    row = outbox.lane(Sink.WEBHOOK, "a", 1)[0]
    safe = {"url": HOOK["url"], "headers": {"X-Token": "***"}}
    outbox.dead_letter(row, "HTTP 400 from http://127.0.0.1:9/hook", safe)
    assert outbox.stats(Sink.WEBHOOK).backlog == 0
    assert outbox.stats(Sink.WEBHOOK).dead_letters == 1
    [letter] = outbox.dead_letters()
    assert letter["message_id"] == "m1" and letter["envelope"] == {"message_id": "m1"}
    assert letter["reason"].startswith("HTTP 400") and "s3cret" not in str(letter)


def test_dead_letters_are_bounded_and_pruning_is_counted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", dead_letter_limit=3)
    box.add([NewMessage(Sink.WEBHOOK, "a", f"m{n}", HOOK, b"{}") for n in range(5)])
    for row in box.lane(Sink.WEBHOOK, "a", 10):
        box.dead_letter(row, "HTTP 400", {})
    assert [d["message_id"] for d in box.dead_letters()] == ["m4", "m3", "m2"]
    assert box.stats(Sink.WEBHOOK).dead_letters_pruned == 2
    box.close()


def test_dead_letters_get_a_tenth_of_the_cap(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=1 << 20)
    box.add([NewMessage(Sink.WEBHOOK, "a", f"m{n}", HOOK, b'"' + b"x" * 40_000 + b'"') for n in range(5)])
    for row in box.lane(Sink.WEBHOOK, "a", 10):
        box.dead_letter(row, "HTTP 413", {})
    kept = [d["message_id"] for d in box.dead_letters()]  # newest first; 2 x 40 kB fit in 104 857 bytes
    assert kept == ["m4", "m3"]
    box.close()


def test_at_the_cap_the_oldest_undelivered_are_dropped_and_counted(tmp_path: Path) -> None:
    size = 1000
    cap = 10 * (size + ROW_OVERHEAD)
    box = Outbox(tmp_path / "o.db", max_bytes=cap)
    for n in range(8):
        box.add([_msg(Sink.WEBHOOK, "a", n, size)])
    for n in range(8, 15):
        box.add([_msg(Sink.MQTT, "a", n, size)])
    assert box.stored_bytes <= cap
    webhook, mqtt = box.stats(Sink.WEBHOOK), box.stats(Sink.MQTT)
    assert webhook.dropped_at_cap == 5 and mqtt.dropped_at_cap == 0
    assert webhook.backlog + mqtt.backlog == 10
    # the survivors are the newest ones, still in order
    assert [m.message_id for m in box.lane(Sink.WEBHOOK, "a", 10)] == [f"m-a-{n}" for n in range(5, 8)]
    box.close()


def test_everything_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, synchronous="FULL")
    box.add([_msg(Sink.WEBHOOK, "a", n) for n in range(3)] + [_msg(Sink.MQTT, "b", 0)])
    box.retry_later(box.lane(Sink.WEBHOOK, "a", 1)[0], 0, "HTTP 503")
    box.ack(Sink.MQTT, [m.row_id for m in box.after(Sink.MQTT, 0, 10)])
    stored = box.stored_bytes
    box.close()
    again = Outbox(path)
    assert again.stored_bytes == stored
    assert again.ready_lanes(Sink.WEBHOOK, time.time())[0] == ["a"]
    assert [m.attempts for m in again.lane(Sink.WEBHOOK, "a", 10)] == [1, 0, 0]
    assert again.stats(Sink.MQTT).delivered == 1 and again.stats(Sink.WEBHOOK).failed == 1
    again.close()


def test_bad_synchronous_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Outbox(tmp_path / "o.db", synchronous="OFF")  # type: ignore[arg-type]
