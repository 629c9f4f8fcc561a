"""The durable outbox: every result is committed to SQLite before the pipeline moves on.

One row per (event, sink). Each sink drains only its own rows, so a dead webhook never holds back MQTT;
within a sink, a task's rows form a *lane* delivered in id order (the head is retried until it is delivered
or dead-lettered). Rows are deleted when delivered; a permanent failure moves the row to ``dead_letter``.
At the size cap the oldest undelivered rows are dropped and counted — never the process memory.

WAL mode; ``synchronous`` is NORMAL or FULL (see docs/benchmarks.md, "Outbox throughput" for the measured cost). Both
survive ``kill -9`` (a committed transaction is in the WAL file). FULL syncs every commit, so it survives a
power cut too; NORMAL syncs at most once a second (a WAL checkpoint), so a power cut may lose the events of
that last second, never corrupt the file.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

# With synchronous=NORMAL a commit reaches the WAL file but not the disk; a checkpoint syncs the WAL first.
# Checkpointing at most this often bounds what a power cut can take to the last second of events while
# commits stay cheap (measured in docs/benchmarks.md, "Outbox throughput").
SYNC_INTERVAL_S = 1.0
# Bytes charged per row on top of payload and destination: the rowid, indexes and page slack, so that the
# cap tracks the file size closely enough with many small events.
ROW_OVERHEAD = 128
DEAD_LETTER_LIMIT = 10_000
DEAD_LETTER_SHARE = 10  # dead letters keep at most max_bytes / DEAD_LETTER_SHARE of payload

_SCHEMA = """
CREATE TABLE IF NOT EXISTS destination (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    task_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    destination_id INTEGER NOT NULL REFERENCES destination(id),
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS message_lane ON message(sink, task_id, id);
CREATE INDEX IF NOT EXISTS message_sink ON message(sink, id);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    task_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    failed_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counter (
    sink TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (sink, name)
);
"""


class Sink(str, Enum):
    MQTT = "mqtt"
    WEBHOOK = "webhook"
    OBS = "obs"
    DIS = "dis"


class Counter(str, Enum):
    DELIVERED = "delivered"
    FAILED = "failed"  # delivery attempts that did not succeed (each retry counts)
    DEAD_LETTERS = "dead_letters"
    DROPPED_AT_CAP = "dropped_at_cap"
    DEAD_LETTERS_PRUNED = "dead_letters_pruned"


@dataclass(frozen=True)
class NewMessage:
    """A message to enqueue. ``destination`` is what the sink needs after a restart (topic, or url+headers)."""

    sink: Sink
    task_id: str
    message_id: str
    destination: Mapping[str, Any]
    payload: bytes


@dataclass(frozen=True)
class QueuedMessage:
    row_id: int
    sink: Sink
    task_id: str
    message_id: str
    destination: Mapping[str, Any]
    payload: bytes
    attempts: int
    created_at: float
    next_attempt_at: float  # epoch seconds; 0 unless this row failed before


@dataclass(frozen=True)
class SinkStats:
    backlog: int
    oldest_undelivered_age_s: float | None
    delivered: int
    failed: int
    dead_letters: int
    dead_letters_pruned: int  # the oldest dead letters removed to keep the dead-letter table within its share
    dropped_at_cap: int


def open_private_file(path: Path) -> None:
    """Create ``path`` as 0600 (if new) and tighten it if it exists: it holds webhook header values."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class Outbox:
    """Thread-safe: one connection guarded by a lock (SQLite serialises writers anyway)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 1 << 30,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        dead_letter_limit: int = DEAD_LETTER_LIMIT,
        sync_interval_s: float = SYNC_INTERVAL_S,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("outbox.synchronous must be NORMAL or FULL")
        self.path = path
        self.max_bytes = max_bytes
        self._dead_letter_limit = dead_letter_limit
        self._sync_interval_s = sync_interval_s if synchronous == "NORMAL" else None
        self._last_sync = time.monotonic()
        open_private_file(path)
        self._lock = threading.RLock()
        self._closed = False
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=OFF")
        self._db.executescript(_SCHEMA)
        self._destinations: dict[str, int] = {}
        self._destination_specs: dict[int, Mapping[str, Any]] = {}
        for dest_id, spec in self._db.execute("SELECT id, spec FROM destination"):
            self._destinations[spec] = dest_id
            self._destination_specs[dest_id] = json.loads(spec)
        self._stored_bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM message").fetchone()[0])
        self._backlog: dict[Sink, int] = dict.fromkeys(Sink, 0)
        self._lanes: dict[Sink, set[str]] = {sink: set() for sink in Sink}
        for sink, task_id, count in self._db.execute(
            "SELECT sink, task_id, COUNT(*) FROM message GROUP BY sink, task_id"
        ):
            self._backlog[Sink(sink)] += count
            self._lanes[Sink(sink)].add(task_id)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._db.close()

    def _sync_if_due(self) -> None:
        if self._sync_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_sync >= self._sync_interval_s:
            self._last_sync = now
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- writing -----------------------------------------------------------------------------------

    def add(self, messages: Sequence[NewMessage]) -> None:
        """Enqueue ``messages`` in one transaction; committed (durable) when this returns."""
        if not messages:
            return
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = []
                added = 0
                for message in messages:
                    dest_id = self._destination_id(message.destination)
                    size = len(message.payload) + ROW_OVERHEAD
                    rows.append((message.sink.value, message.task_id, message.message_id, dest_id,
                                 message.payload, size, now))
                    added += size
                dropped = self._make_room(added)
                self._db.executemany(
                    "INSERT INTO message (sink, task_id, message_id, destination_id, payload, size, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._reload_accounting()
                raise
            self._stored_bytes += added
            for message in messages:
                self._backlog[message.sink] += 1
                self._lanes[message.sink].add(message.task_id)
            self._sync_if_due()
        for sink, count in dropped.items():
            log.warning("outbox at its size cap (%d bytes): dropped the %d oldest undelivered %s events",
                        self.max_bytes, count, sink.value)

    def _destination_id(self, destination: Mapping[str, Any]) -> int:
        spec = json.dumps(destination, sort_keys=True, separators=(",", ":"))
        dest_id = self._destinations.get(spec)
        if dest_id is None:
            self._db.execute("INSERT OR IGNORE INTO destination (spec) VALUES (?)", (spec,))
            dest_id = int(self._db.execute("SELECT id FROM destination WHERE spec = ?", (spec,)).fetchone()[0])
            self._destinations[spec] = dest_id
            self._destination_specs[dest_id] = json.loads(spec)
        return dest_id

    def _make_room(self, incoming: int) -> dict[Sink, int]:
        """Drop the oldest undelivered rows (any sink) until ``incoming`` bytes fit under the cap."""
        excess = self._stored_bytes + incoming - self.max_bytes
        dropped: dict[Sink, int] = {}
        while excess > 0:
            batch = self._db.execute(
                "SELECT id, sink, size FROM message ORDER BY id LIMIT 256"
            ).fetchall()
            if not batch:
                break  # a single event larger than the cap: keep it rather than lose it silently
            victims = []
            for row_id, sink, size in batch:
                victims.append((row_id,))
                dropped[Sink(sink)] = dropped.get(Sink(sink), 0) + 1
                excess -= size
                self._stored_bytes -= size
                self._backlog[Sink(sink)] -= 1
                if excess <= 0:
                    break
            self._db.executemany("DELETE FROM message WHERE id = ?", victims)
        for sink, count in dropped.items():
            self._bump(sink, Counter.DROPPED_AT_CAP, count)
        return dropped

    def _bump(self, sink: Sink, counter: Counter, by: int = 1) -> None:
        self._db.execute(
            "INSERT INTO counter (sink, name, value) VALUES (?, ?, ?)"
            " ON CONFLICT (sink, name) DO UPDATE SET value = value + excluded.value",
            (sink.value, counter.value, by),
        )

    def _reload_accounting(self) -> None:
        self._stored_bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM message").fetchone()[0])
        self._backlog = dict.fromkeys(Sink, 0)
        for sink, count in self._db.execute("SELECT sink, COUNT(*) FROM message GROUP BY sink"):
            self._backlog[Sink(sink)] = count

    def ack(self, sink: Sink, row_ids: Iterable[int]) -> int:
        """Delivered: delete the rows; returns how many were still queued (others were dropped at the cap)."""
        ids = [(row_id,) for row_id in row_ids]
        if not ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                placeholders = ",".join("?" * len(ids))
                flat = [row_id for (row_id,) in ids]
                sizes = self._db.execute(
                    f"SELECT COALESCE(SUM(size), 0), COUNT(*) FROM message WHERE id IN ({placeholders})", flat
                ).fetchone()
                self._db.execute(f"DELETE FROM message WHERE id IN ({placeholders})", flat)
                removed = int(sizes[1])
                if removed:
                    self._bump(sink, Counter.DELIVERED, removed)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._stored_bytes -= int(sizes[0])
            self._backlog[sink] -= removed
        return removed

    def retry_later(self, message: QueuedMessage, delay_s: float, reason: str) -> None:
        """A transient failure of a lane's head: count it and hold the lane for ``delay_s``."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "UPDATE message SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                    (time.time() + delay_s, reason, message.row_id),
                )
                self._bump(message.sink, Counter.FAILED)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def count_failures(self, sink: Sink, count: int) -> None:
        """Failed attempts that a sink retries by itself (MQTT resends after a reconnect)."""
        if count <= 0:
            return
        with self._lock:
            self._bump(sink, Counter.FAILED, count)

    def dead_letter(self, message: QueuedMessage, reason: str, destination: Mapping[str, Any]) -> None:
        """A permanent failure: move the row to dead_letter (``destination`` already stripped of secrets)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                size_row = self._db.execute("SELECT size FROM message WHERE id = ?", (message.row_id,)).fetchone()
                self._db.execute("DELETE FROM message WHERE id = ?", (message.row_id,))
                self._db.execute(
                    "INSERT INTO dead_letter (sink, task_id, message_id, destination, payload, created_at,"
                    " failed_at, attempts, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (message.sink.value, message.task_id, message.message_id,
                     json.dumps(destination, sort_keys=True), message.payload, message.created_at, now,
                     message.attempts + 1, reason),
                )
                self._bump(message.sink, Counter.DEAD_LETTERS)
                pruned = self._db.execute(
                    "DELETE FROM dead_letter WHERE id <= (SELECT MAX(id) FROM dead_letter) - ?",
                    (self._dead_letter_limit,),
                ).rowcount
                # Dead letters may hold images: they also get at most a tenth of the size cap.
                pruned += self._db.execute(
                    "DELETE FROM dead_letter WHERE id <= (SELECT id FROM (SELECT id, SUM(LENGTH(payload))"
                    " OVER (ORDER BY id DESC) AS newer_bytes FROM dead_letter) WHERE newer_bytes > ?"
                    " ORDER BY id DESC LIMIT 1)",
                    (self.max_bytes // DEAD_LETTER_SHARE,),
                ).rowcount
                if pruned > 0:
                    self._bump(message.sink, Counter.DEAD_LETTERS_PRUNED, pruned)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if size_row is not None:
                self._stored_bytes -= int(size_row[0])
                self._backlog[message.sink] -= 1
        if pruned > 0:
            log.warning("dead letters full: pruned the %d oldest", pruned)

    # -- reading -----------------------------------------------------------------------------------

    def _message(self, row: tuple[Any, ...]) -> QueuedMessage:
        row_id, sink, task_id, message_id, dest_id, payload, attempts, created_at, next_attempt_at = row
        return QueuedMessage(row_id, Sink(sink), task_id, message_id, self._destination_specs[dest_id],
                             bytes(payload), attempts, created_at, next_attempt_at)

    _COLUMNS = "id, sink, task_id, message_id, destination_id, payload, attempts, created_at, next_attempt_at"

    def ready_lanes(self, sink: Sink, now: float) -> tuple[list[str], float | None]:
        """Tasks of ``sink`` whose head may be tried at ``now``, and the earliest later due time."""
        ready: list[str] = []
        next_due: float | None = None
        with self._lock:
            for task_id in sorted(self._lanes[sink]):
                head = self._db.execute(
                    "SELECT next_attempt_at FROM message WHERE sink = ? AND task_id = ? ORDER BY id LIMIT 1",
                    (sink.value, task_id),
                ).fetchone()
                if head is None:
                    self._lanes[sink].discard(task_id)
                elif head[0] <= now:
                    ready.append(task_id)
                else:
                    next_due = head[0] if next_due is None else min(next_due, head[0])
        return ready, next_due

    def lane(self, sink: Sink, task_id: str, limit: int) -> list[QueuedMessage]:
        """The first ``limit`` rows of a task's lane, in order."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._COLUMNS} FROM message WHERE sink = ? AND task_id = ? ORDER BY id LIMIT ?",
                (sink.value, task_id, limit),
            ).fetchall()
        return [self._message(row) for row in rows]

    def after(self, sink: Sink, row_id: int, limit: int) -> list[QueuedMessage]:
        """Rows of ``sink`` with an id above ``row_id``, in order (a cursor for pipelined sinks)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._COLUMNS} FROM message WHERE sink = ? AND id > ? ORDER BY id LIMIT ?",
                (sink.value, row_id, limit),
            ).fetchall()
        return [self._message(row) for row in rows]

    def stats(self, sink: Sink, now: float | None = None) -> SinkStats:
        now = time.time() if now is None else now
        with self._lock:
            oldest = self._db.execute(
                "SELECT created_at FROM message WHERE sink = ? ORDER BY id LIMIT 1", (sink.value,)
            ).fetchone()
            counters = dict(self._db.execute("SELECT name, value FROM counter WHERE sink = ?", (sink.value,)))
            backlog = self._backlog[sink]
        return SinkStats(
            backlog=backlog,
            oldest_undelivered_age_s=None if oldest is None else max(0.0, now - oldest[0]),
            delivered=counters.get(Counter.DELIVERED.value, 0),
            failed=counters.get(Counter.FAILED.value, 0),
            dead_letters=counters.get(Counter.DEAD_LETTERS.value, 0),
            dead_letters_pruned=counters.get(Counter.DEAD_LETTERS_PRUNED.value, 0),
            dropped_at_cap=counters.get(Counter.DROPPED_AT_CAP.value, 0),
        )

    @property
    def stored_bytes(self) -> int:
        with self._lock:
            return self._stored_bytes

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters first; the payload is the envelope as JSON (it was valid when queued)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sink, task_id, message_id, destination, payload, created_at, failed_at, attempts,"
                " reason FROM dead_letter ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            {
                "id": row_id,
                "sink": sink,
                "task_id": task_id,
                "message_id": message_id,
                "destination": json.loads(destination),
                "envelope": json.loads(payload),
                "created_at": created_at,
                "failed_at": failed_at,
                "attempts": attempts,
                "reason": reason,
            }
            for row_id, sink, task_id, message_id, destination, payload, created_at, failed_at, attempts, reason
            in rows
        ]
