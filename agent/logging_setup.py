"""The agent's log output: one line per event, JSON off a TTY, secrets masked, repeats rate-limited.

Everything a caller logs goes through one handler on the root logger:
- ``RepeatLimiter`` drops repeats of the same line within a window and writes one
  "repeated N times" summary instead, so a camera that is down does not write a line per second;
- ``JsonFormatter`` / ``TextFormatter`` pass the message, its arguments, the exception text, the
  stack and every ``extra`` field through ``agent.redact.mask_text``, so no caller can leak a URL
  credential or a registered secret, however it logs.

See docs/logging.md for the line shapes and the repeat rule.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, TextIO

from agent.redact import mask_text

LogFormat = Literal["auto", "json", "text"]
DEFAULT_REPEAT_WINDOW_S = 60.0
# ``extra={REPEAT_GROUP: name}``: the caller says which lines repeat one another, whatever their arguments
REPEAT_GROUP = "repeat_group"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# loggers that write every HTTP request at INFO: one line per call is not an event worth knowing
_CHATTY_LIBRARIES = ("httpx", "httpcore", "uvicorn.access")
# attributes every LogRecord has; anything else on a record came from ``extra=``
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
    REPEAT_GROUP,  # an instruction to the limiter, not a fact about the event
}
# syslog priorities journald reads from a "<N>" line prefix (SyslogLevelPrefix=, on by default)
_SYSLOG_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with ``extra=``, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


def _masked_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return mask_text(value if isinstance(value, str) else str(value))


def _masked_message(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # a caller's bad format string must not lose the line (nor print its args raw)
        message = f"{record.msg} (log arguments did not fit the message: {record.args!r})"
    return mask_text(message)


def _masked_exception(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    parts: list[str] = []
    if record.exc_info and record.exc_info[0] is not None:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return mask_text("\n".join(parts)) if parts else None


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, worker (in a worker process), the extra fields,
    and exc when there is one.

    Extra fields that would shadow those keys are written with an ``extra_`` prefix.
    """

    CORE_KEYS = ("ts", "level", "logger", "message", "worker", "exc")

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _masked_message(record),
        }
        if self.worker is not None:
            line["worker"] = self.worker
        for key, value in extra_fields(record).items():
            line[f"extra_{key}" if key in self.CORE_KEYS else key] = _masked_value(value)
        exception = _masked_exception(self, record)
        if exception is not None:
            line["exc"] = exception
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-29T16:50:00.123Z WARNING agent.sources.stream: message key=value …`` then the traceback;
    ``[worker N]`` after the time in a worker process.

    Meant for a person at a terminal; machines get ``JsonFormatter``.
    """

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.prefix = "" if worker is None else f"[worker {worker}] "

    def format(self, record: logging.LogRecord) -> str:
        fields = "".join(f" {key}={_masked_value(value)}" for key, value in extra_fields(record).items()
                         if key != "repeated")  # a summary already says it in its message
        line = (f"{_timestamp(record)} {self.prefix}{record.levelname} {record.name}: {_masked_message(record)}"
                f"{fields}")
        exception = _masked_exception(self, record)
        return line if exception is None else f"{line}\n{exception}"


@dataclass
class _Repeats:
    started: float
    count: int = 0
    last_at: float = 0.0
    last: logging.LogRecord | None = field(default=None, repr=False)


class RepeatLimiter:
    """Writes the first of a run of identical lines, then one summary per window instead of the rest.

    Two records are the same line when logger, level, message template and every argument and
    ``extra`` value match, except floats: a retry delay or a rate may vary between repeats, while
    strings and integers (task ids, input indexes, error texts) tell different events apart. A
    caller that knows better names the run with ``extra={REPEAT_GROUP: name}``: records of one
    logger and level with the same group are the same line whatever their arguments (e.g. foreign
    code failing on every frame with a different message each time).
    """

    def __init__(self, window_s: float = DEFAULT_REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError("the repeat window must be positive")
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[Hashable, _Repeats] = {}

    @staticmethod
    def key(record: logging.LogRecord) -> Hashable:
        group = getattr(record, REPEAT_GROUP, None)
        if group is not None:
            return record.name, record.levelno, REPEAT_GROUP, str(group)
        args = record.args
        values: list[tuple[str, Any]] = []
        if isinstance(args, Mapping):
            values.extend((str(k), v) for k, v in args.items())
        elif args:
            values.extend(("", v) for v in args)
        values.extend(extra_fields(record).items())
        identity = tuple((name, repr(value)) for name, value in values if not isinstance(value, float))
        return record.name, record.levelno, str(record.msg), identity

    def admit(self, record: logging.LogRecord) -> tuple[bool, list[logging.LogRecord]]:
        """Whether to write ``record``, and the summaries to write before it.

        Summaries cover runs whose window has ended: this record's own (it then starts a new
        window) and those of lines that stopped repeating.
        """
        now = self._clock()
        key = self.key(record)
        with self._lock:
            run = self._runs.get(key)
            if run is not None and now - run.started < self.window_s:
                run.count += 1
                run.last, run.last_at = record, now
                return False, []
            summaries = [self._summary(r) for r in self._runs.values()
                         if r.count and now - r.started >= self.window_s]
            self._runs = {k: r for k, r in self._runs.items() if now - r.started < self.window_s}
            self._runs[key] = _Repeats(started=now)
            return True, summaries

    def drain(self) -> list[logging.LogRecord]:
        """Summaries of every run with suppressed repeats, whatever their window (at shutdown)."""
        with self._lock:
            summaries = [self._summary(r) for r in self._runs.values() if r.count]
            self._runs.clear()
        return summaries

    @staticmethod
    def _summary(run: _Repeats) -> logging.LogRecord:
        last = run.last
        assert last is not None
        seconds = run.last_at - run.started
        fields = {k: v for k, v in vars(last).items() if k not in ("exc_info", "exc_text", "stack_info")}
        fields.update(
            msg=f"{_masked_message(last)} (repeated {run.count} times in {seconds:.0f} s)",
            args=None,
            repeated=run.count,
        )
        return logging.makeLogRecord(fields)


class AgentLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler: rate-limits repeats, then writes masked lines (syslog-prefixed under journald)."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter, limiter: RepeatLimiter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.limiter = limiter
        self.journald = _on_journald(stream)

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        write, summaries = self.limiter.admit(record)
        for summary in summaries:
            super().handle(summary)
        if write:
            super().handle(record)
        return write

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if self.journald:
            return f"<{_SYSLOG_PRIORITY.get(record.levelname, 6)}>{line}"
        return line

    def flush_repeats(self) -> None:
        """Write the pending "repeated N times" summaries now."""
        for summary in self.limiter.drain():
            super().handle(summary)

    def close(self) -> None:
        self.flush_repeats()
        super().close()

    def handleError(self, record: logging.LogRecord) -> None:
        # the default prints the record's raw message and arguments: they may hold a secret
        if logging.raiseExceptions and sys.stderr is not None:
            exc = sys.exc_info()[1]
            sys.stderr.write(mask_text(f"edge-agent: could not write a log line from {record.name}: {exc!r}\n"))


def _on_journald(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd gave us (it says so in $JOURNAL_STREAM)."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, AttributeError):
        return False


def configure_logging(
    level: str = "INFO",
    fmt: LogFormat = "auto",
    *,
    stream: TextIO | None = None,
    repeat_window_s: float = DEFAULT_REPEAT_WINDOW_S,
    clock: Callable[[], float] = time.monotonic,
    worker: int | None = None,
) -> AgentLogHandler:
    """Install the agent's handler on the root logger (replacing one installed before) and return it.

    ``fmt="auto"`` writes JSON lines unless ``stream`` (stderr by default) is a terminal. ``worker``: the
    index of the worker process this is, written on every line (the main process has none).
    """
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"log.level must be one of {', '.join(LEVELS)}")
    if fmt not in ("auto", "json", "text"):
        raise ValueError("log.format must be auto, json or text")
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not _is_tty(out))
    formatter: logging.Formatter = JsonFormatter(worker) if use_json else TextFormatter(worker)
    handler = AgentLogHandler(out, formatter, RepeatLimiter(repeat_window_s, clock))
    handler.set_name("edge-agent")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, AgentLogHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(name)
    for library in _CHATTY_LIBRARIES:
        logging.getLogger(library).setLevel(logging.DEBUG if name == "DEBUG" else logging.WARNING)
    logging.captureWarnings(True)
    return handler
