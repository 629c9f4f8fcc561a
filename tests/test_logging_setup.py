"""The agent's log lines: JSON/text shapes, masking of every part of a record, repeat limiting."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import pty
import secrets as random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.logging_setup import REPEAT_GROUP, AgentLogHandler, RepeatLimiter, configure_logging
from agent.redact import secrets


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def setup(
    fmt: str = "json", clock: FakeClock | None = None, level: str = "DEBUG"
) -> tuple[io.StringIO, AgentLogHandler]:
    out = io.StringIO()
    handler = configure_logging(level, fmt, stream=out, clock=clock or FakeClock())  # type: ignore[arg-type]
    return out, handler


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def records(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(out)]


def a_secret() -> str:
    value = "s3cr3t-" + random.token_hex(8)
    secrets.register(f"test:{value}", [value])
    return value


# --- shapes --------------------------------------------------------------------------------------

def test_json_line_has_the_journald_friendly_shape() -> None:
    out, _ = setup("json")
    logging.getLogger("agent.sources.stream").warning("input %d stalled", 3, extra={"task_id": "ab12", "input": 3})
    (line,) = records(out)
    assert list(line)[:4] == ["ts", "level", "logger", "message"]
    assert line["level"] == "WARNING"
    assert line["logger"] == "agent.sources.stream"
    assert line["message"] == "input 3 stalled"
    assert line["task_id"] == "ab12" and line["input"] == 3
    assert line["ts"].endswith("Z") and line["ts"][10] == "T" and len(line["ts"]) == len("2026-11-29T16:50:00.123Z")
    assert "exc" not in line


def test_json_exception_stays_on_one_line() -> None:
    out, _ = setup("json")
    try:
        raise RuntimeError("decoder fell over")
    except RuntimeError:
        logging.getLogger("agent.x").exception("pipeline failed", extra={"level": "shadow", "ts": 1})
    (raw,) = lines(out)
    line = json.loads(raw)
    assert line["message"] == "pipeline failed" and line["level"] == "ERROR"
    assert line["extra_level"] == "shadow" and line["extra_ts"] == 1
    assert "Traceback" in line["exc"] and "RuntimeError: decoder fell over" in line["exc"]


def test_text_format_is_one_readable_line_with_fields() -> None:
    out, _ = setup("text")
    logging.getLogger("agent.tasks.service").info("task created", extra={"task_id": "ab12"})
    (line,) = lines(out)
    assert line.endswith(" INFO agent.tasks.service: task created task_id=ab12")


def test_a_worker_process_names_itself_on_every_line_and_the_main_process_does_not() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out, worker=3)
    logging.getLogger("agent.sources.stream").warning("input 0 stalled", extra={"task_id": "ab12"})
    (line,) = records(out)
    assert line["worker"] == 3 and line["task_id"] == "ab12"
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out, worker=3)
    logging.getLogger("agent.sources.stream").warning("input 0 stalled")
    assert lines(out)[0].endswith("Z [worker 3] WARNING agent.sources.stream: input 0 stalled")
    out, _ = setup("json")
    logging.getLogger("agent.t").info("hello")
    assert "worker" not in records(out)[0]


def test_auto_writes_json_off_a_terminal_and_text_on_one() -> None:
    out = io.StringIO()
    configure_logging("INFO", "auto", stream=out)
    logging.getLogger("agent.t").info("hello")
    assert json.loads(out.getvalue())["message"] == "hello"

    controller, terminal = pty.openpty()
    with os.fdopen(terminal, "w") as tty, os.fdopen(controller, "rb", buffering=0) as reader:
        configure_logging("INFO", "auto", stream=tty)
        logging.getLogger("agent.t").info("hello")
        written = reader.read(4096).decode()
    assert "INFO agent.t: hello" in written and not written.startswith("{")


def test_level_filters_and_bad_settings_name_the_field() -> None:
    out, _ = setup("json", level="warning")
    logging.getLogger("agent.t").info("quiet")
    logging.getLogger("agent.t").warning("loud")
    assert [r["message"] for r in records(out)] == ["loud"]
    with pytest.raises(ValueError, match=r"log\.level"):
        configure_logging("LOUD", "json")
    with pytest.raises(ValueError, match=r"log\.format"):
        configure_logging("INFO", "xml")  # type: ignore[arg-type]


def test_configuring_again_replaces_the_handler() -> None:
    setup("json")
    out, handler = setup("json")
    ours = [h for h in logging.getLogger().handlers if isinstance(h, AgentLogHandler)]
    assert ours == [handler]
    logging.getLogger("agent.t").info("once")
    assert len(lines(out)) == 1


def test_journald_stream_gets_syslog_priority_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as pipe, os.fdopen(read_fd) as reader:
        stat = os.fstat(pipe.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        configure_logging("INFO", "auto", stream=pipe)
        logging.getLogger("agent.t").error("broken")
        logging.getLogger("agent.t").info("fine")
        pipe.flush()
        first, second = reader.readline(), reader.readline()
    assert first.startswith("<3>{") and json.loads(first[3:])["message"] == "broken"
    assert second.startswith("<6>{")


def test_no_journald_prefix_when_journal_stream_is_another_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    out, _ = setup("json")
    logging.getLogger("agent.t").error("broken")
    assert lines(out)[0].startswith("{")


# --- masking -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_are_masked_in_every_part_of_a_record(fmt: str) -> None:
    token = a_secret()
    out, _ = setup(fmt)
    log = logging.getLogger("agent.sources.resolvers")
    log.warning(f"open rtsp://admin:{token}@10.0.0.5/ch1 failed")
    log.warning("open %s failed", "rtsp://admin:hunter22@10.0.0.5/ch1")
    log.warning("lookup %(url)s", {"url": f"https://h/x?token={token}"})
    log.warning("header value %s refused", token)
    log.warning("resolved", extra={"url": "rtsp://u:pw1234@h/s", "headers": {"X-Key": token}})
    try:
        raise ConnectionError(f"GET https://op:{token}@vcn/api said no; key {token}")
    except ConnectionError:
        log.exception("vcn login failed")
    log.warning("where am I", stack_info=True, extra={"note": token})
    text = out.getvalue()
    for leaked in (token, "hunter22", "pw1234"):
        assert leaked not in text
    assert text.count("***") >= 8
    if fmt == "json":
        parsed = records(out)
        assert parsed[0]["message"] == "open rtsp://***@10.0.0.5/ch1 failed"
        assert parsed[1]["message"] == "open rtsp://***@10.0.0.5/ch1 failed"
        assert parsed[2]["message"] == "lookup https://h/x?token=***"
        assert parsed[3]["message"] == "header value *** refused"
        assert parsed[4]["url"] == "rtsp://***@h/s" and token not in parsed[4]["headers"]
        assert "ConnectionError: GET https://***@vcn/api said no; key ***" in parsed[5]["exc"]


def test_a_bad_format_string_still_writes_a_masked_line() -> None:
    out, handler = setup("json")
    # straight to our handler: pytest's own capture handler would raise on this record
    handler.handle(logging.LogRecord("agent.t", logging.INFO, __file__, 1, "camera %d down",
                                     ("rtsp://admin:letmein@h/1",), None))
    (line,) = records(out)
    assert "letmein" not in line["message"] and "camera %d down" in line["message"]


def test_a_failing_stream_reports_without_the_raw_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = setup("json")
    out.close()  # writing now raises ValueError inside the handler
    logging.getLogger("agent.t").warning("open %s", "rtsp://admin:letmein@h/1")
    err = capsys.readouterr().err
    assert "could not write a log line from agent.t" in err
    assert "letmein" not in err


def test_warnings_are_logged_masked() -> None:
    out, _ = setup("json")
    import warnings

    warnings.warn("deprecated use of rtsp://a:b0gus@h", DeprecationWarning, stacklevel=1)
    (line,) = records(out)
    assert line["logger"] == "py.warnings" and "b0gus" not in line["message"]


# --- repeats -------------------------------------------------------------------------------------

def test_repeats_within_the_window_write_once_then_a_summary(clock: FakeClock) -> None:
    out, _ = setup("json", clock)
    log = logging.getLogger("agent.sources.stream")
    for _ in range(60):  # one failure a second for a minute
        log.warning("input %d: connect to %s failed", 0, "rtsp://u:pw99@cam/1", extra={"task_id": "t1"})
        clock.now += 1.0
    assert [r["message"] for r in records(out)] == ["input 0: connect to rtsp://***@cam/1 failed"]
    log.warning("input %d: connect to %s failed", 0, "rtsp://u:pw99@cam/1", extra={"task_id": "t1"})
    summary, again = records(out)[1:]
    assert summary["message"] == "input 0: connect to rtsp://***@cam/1 failed (repeated 59 times in 59 s)"
    assert summary["repeated"] == 59 and summary["task_id"] == "t1" and summary["level"] == "WARNING"
    assert again["message"] == "input 0: connect to rtsp://***@cam/1 failed" and "repeated" not in again


def test_a_line_that_stops_repeating_is_summarised_by_the_next_line_or_at_close(clock: FakeClock) -> None:
    out, handler = setup("text", clock)
    log = logging.getLogger("agent.t")
    for _ in range(5):
        log.error("camera down")
        clock.now += 1.0
    clock.now += 120
    log.info("camera back")
    assert [line.split(": ", 1)[1] for line in lines(out)] == [
        "camera down", "camera down (repeated 4 times in 4 s)", "camera back",
    ]
    for _ in range(3):
        log.error("camera down")
    handler.close()
    assert lines(out)[-1].endswith("camera down (repeated 2 times in 0 s)")


def test_different_subjects_are_not_repeats_but_varying_floats_are(clock: FakeClock) -> None:
    out, _ = setup("json", clock)
    log = logging.getLogger("agent.tasks.service")
    for task in ("a", "b", "c"):
        log.info("task created", extra={"task_id": task})
        log.info("task %s started", task)
    for delay in (0.5, 1.0, 2.0, 4.0):
        log.warning("reconnecting in %.1f s", delay)
    log.error("reconnecting in %.1f s", 8.0)  # another level is another line
    assert [r["message"] for r in records(out)] == [
        "task created", "task a started", "task created", "task b started", "task created", "task c started",
        "reconnecting in 0.5 s", "reconnecting in 8.0 s",
    ]


def test_a_named_group_is_one_run_whatever_its_arguments(clock: FakeClock) -> None:
    out, _ = setup("json", clock)
    log = logging.getLogger("agent.algorithms.runner")
    for n in range(10):
        log.warning("task %s failed: %s", "a", f"bad frame {n}", extra={REPEAT_GROUP: "a failed"})
        clock.now += 1.0
    log.warning("task %s failed: %s", "b", "bad frame 0", extra={REPEAT_GROUP: "b failed"})
    log.error("task %s failed: %s", "a", "bad frame 10", extra={REPEAT_GROUP: "a failed"})  # another level
    clock.now += 60.0
    log.info("done")
    assert [r["message"] for r in records(out)] == [
        "task a failed: bad frame 0", "task b failed: bad frame 0", "task a failed: bad frame 10",
        "task a failed: bad frame 9 (repeated 9 times in 9 s)", "done",
    ]
    assert all(REPEAT_GROUP not in r for r in records(out))  # an instruction to the limiter, not a field


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        RepeatLimiter(0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 40), st.integers(0, 3)), min_size=1, max_size=60))
def test_every_record_is_written_or_counted_exactly_once(steps: list[tuple[float, int]]) -> None:
    clock = FakeClock()
    limiter = RepeatLimiter(30.0, clock)
    written: list[tuple[float, int]] = []
    summarised = 0
    for gap, which in steps:
        clock.now += gap
        record = logging.LogRecord("agent.t", logging.WARNING, __file__, 1, "line %d", (which,), None)
        write, summaries = limiter.admit(record)
        summarised += sum(s.repeated for s in summaries)
        if write:
            written.append((clock.now, which))
    summarised += sum(s.repeated for s in limiter.drain())
    assert len(written) + summarised == len(steps)
    for key in range(4):
        times = [t for t, k in written if k == key]
        assert all(later - earlier >= 30.0 for earlier, later in itertools.pairwise(times))


def test_per_request_http_logs_are_quiet_unless_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    # an in-process uvicorn started by an earlier test detaches its loggers from the root; start clean
    for name in ("uvicorn", "uvicorn.access"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "propagate", True)
        monkeypatch.setattr(logger, "handlers", [])
    out, _ = setup("json", level="INFO")
    logging.getLogger("httpx").info('HTTP Request: POST http://h/hook "HTTP/1.1 200 OK"')
    logging.getLogger("uvicorn.access").info("GET /healthz 200", extra={"color_message": "\x1b[1mGET\x1b[0m"})
    assert lines(out) == []
    out, _ = setup("json", level="DEBUG")
    logging.getLogger("uvicorn.access").info("GET /healthz 200", extra={"color_message": "\x1b[1mGET\x1b[0m"})
    (line,) = records(out)
    assert line["message"] == "GET /healthz 200" and "color_message" not in line


AGENT_PROCESS = """
import logging, sys
from agent.logging_setup import configure_logging
from agent.redact import secrets
secrets.register("task:t1", ["vcn-pass-42"])
configure_logging("INFO", "auto")
log = logging.getLogger("agent.sources.stream")
log.info("task started", extra={"task_id": "t1"})
for _ in range(500):
    log.warning("connect to %s failed", "rtsp://admin:vcn-pass-42@cam/1")
try:
    raise OSError("login with vcn-pass-42 refused")
except OSError:
    log.exception("vcn login failed")
"""


@pytest.mark.integration
def test_a_real_process_writes_masked_json_lines_to_a_piped_stderr() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", AGENT_PROCESS], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "JOURNAL_STREAM": ""})
    assert done.returncode == 0, done.stderr
    assert "vcn-pass-42" not in done.stderr
    parsed = [json.loads(line) for line in done.stderr.splitlines()]
    assert [p["message"].split(" (repeated")[0] for p in parsed] == [
        "task started",
        "connect to rtsp://***@cam/1 failed",
        "vcn login failed",
        "connect to rtsp://***@cam/1 failed",  # the summary, written at exit by logging.shutdown
    ]
    assert parsed[3]["repeated"] == 499
    assert parsed[0]["task_id"] == "t1" and "OSError: login with *** refused" in parsed[2]["exc"]
