"""``edge-agent diag`` as a real command against real parts: Mosquitto, the GStreamer RTSP server, a silent
RTSP port, a webhook receiver, dead ports; with the agent stopped (config + state dir) and running (API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.app import AgentRuntime
from agent.settings import load_settings
from agent.tasks.model import TaskState
from tests.fixtures.mosquitto import Broker
from tests.fixtures.ports import free_port
from tests.fixtures.rtsp import RtspServer, SilentRtspServer
from tests.fixtures.webhook import WebhookReceiver
from tests.waiting import wait_until

RTSP_PASSWORD = "cam-Pa55word!x"
HOOK_SECRET = "hook-header-secret-991"
API_TOKEN = "diag-api-token-1234"


def diag(*args: str, config: Path | None = None, timeout: float = 90) -> tuple[int, str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EDGE_AGENT_")}
    command = [sys.executable, "-m", "agent"]
    if config is not None:
        command += ["--config", str(config)]
    result = subprocess.run([*command, "diag", *args], capture_output=True, text=True, timeout=timeout, env=env)
    return result.returncode, result.stdout, result.stderr


def diag_json(*args: str, config: Path | None = None) -> tuple[int, dict[str, Any], str]:
    code, out, err = diag("--json", *args, config=config)
    return code, json.loads(out), out + err


def by_subject(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["subject"]: check for check in report["checks"]}


def assert_no_secret(text: str) -> None:
    for secret in (RTSP_PASSWORD, HOOK_SECRET, API_TOKEN):
        assert secret not in text


# --- one stream, no task --------------------------------------------------------------------------------
@pytest.mark.integration
def test_url_probe_of_a_live_rtsp_stream_reports_what_it_found(rtsp_h264: RtspServer) -> None:
    url = rtsp_h264.url_with("admin", RTSP_PASSWORD)
    code, report, everything = diag_json("--url", url, "--sample", "3", "--timeout", "3")
    assert code == 0 and report["ok"] is True
    checks = by_subject(report)
    opened = checks["stream open"]
    assert opened["status"] == "OK"
    data = opened["data"]
    assert (data["codec"], data["width"], data["height"], data["fps"]) == ("h264", 320, 240, 25.0)
    assert data["transport"] == "tcp" and 0 < data["open_s"] < 3
    assert data["keyframe_interval_s"] == pytest.approx(2.0, abs=0.2)  # the fixture's 2 s GOP
    assert data["url"] == f"rtsp://***@127.0.0.1:{rtsp_h264.port}/test"
    decoded = checks["stream decode"]
    assert decoded["status"] == "OK" and decoded["data"] == {}
    assert 0 < data["decode_ms_per_frame"] < 40 and "% of a core at 25 fps" in decoded["detail"]
    assert data["frames"] > 25 and data["decode_errors"] == 0  # at 25 fps, ~3 s
    assert "config" not in checks  # a bare probe needs no config
    assert_no_secret(everything)
    assert "probing rtsp://***@" in everything  # progress went to stderr, masked


@pytest.mark.integration
def test_url_probe_table_names_a_dead_port_with_a_hint() -> None:
    url = f"rtsp://admin:{RTSP_PASSWORD}@127.0.0.1:{free_port()}/stream1"
    code, out, err = diag("--url", url, "--sample", "1", "--timeout", "2")
    assert code == 1
    lines = out.splitlines()
    failing = [line for line in lines if line.startswith("FAIL")]
    assert len(failing) == 1 and "stream open" in failing[0] and "connection refused" in failing[0]
    hint = lines[lines.index(failing[0]) + 1]
    assert "↳" in hint and "Nothing listens" in hint
    assert lines[-1] == "0 OK, 0 WARN, 1 FAIL"
    assert_no_secret(out + err)


@pytest.mark.integration
def test_url_probe_of_a_hung_camera_fails_within_its_timeout(silent_rtsp: SilentRtspServer) -> None:
    started = time.monotonic()
    code, report, _ = diag_json("--url", silent_rtsp.url, "--sample", "1", "--timeout", "1")
    assert code == 1
    opened = by_subject(report)["stream open"]
    assert opened["status"] == "FAIL" and "no answer" in opened["detail"]
    assert "hung camera" in opened["hint"]
    assert time.monotonic() - started < 30  # ~2× the timeout plus start-up, never the FFmpeg default (forever)


@pytest.mark.integration
def test_invalid_config_fails_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[mqtt]\nport = 99999\n')
    code, report, _ = diag_json(config=config)
    assert code == 1
    check = by_subject(report)["config"]
    assert check["status"] == "FAIL" and "mqtt.port" in check["detail"] and check["hint"]


# --- the whole box ------------------------------------------------------------------------------------------
@pytest.fixture
def box(tmp_path: Path, mosquitto: Broker) -> Iterator[tuple[Path, Path]]:
    """A config file for an agent with a broker, and its media folder."""
    media = tmp_path / "media"
    media.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node_id = "diag-node"\nstate_dir = "{tmp_path / "state"}"\nmedia_roots = ["{media}"]\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\ntoken = "{API_TOKEN}"\n'
        f'[outbox]\nmax_bytes = 1048576\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
    )
    yield config, media


def task_body(url: str, webhook: str, name: str, event_center: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "input": {"type": "url", "data": [{"url": url, "index": 0}]},
        "output": {"webhook": {"url": webhook, "headers": {"X-Secret": HOOK_SECRET}}, "event_center": event_center},
        "config": {"common": {"fps": 2}},
        "service_version": "1.0",
    }


def wait_running(runtime: AgentRuntime, task_id: str) -> None:
    """Until the stored state (what diag reads) says RUNNING: pipelines report every few seconds."""
    wait_until(lambda: runtime.service.get("p", task_id).state is TaskState.RUNNING, what="task RUNNING")


@pytest.mark.integration
def test_stopped_agent_is_diagnosed_from_config_and_state_dir(
        box: tuple[Path, Path], rtsp_h264: RtspServer, webhook_receiver: WebhookReceiver) -> None:
    config, _ = box
    runtime = AgentRuntime(load_settings(config))
    runtime.start()
    try:
        good = runtime.service.create("p", "intrusion-detection", task_body(
            rtsp_h264.url_with("admin", RTSP_PASSWORD), webhook_receiver.url, "yard", event_center=True))
        dead_webhook = f"http://127.0.0.1:{free_port()}/hook"
        bad = runtime.service.create("p", "intrusion-detection", task_body(
            f"rtsp://admin:{RTSP_PASSWORD}@127.0.0.1:{free_port()}/cam", dead_webhook, "gate"))
    finally:
        runtime.stop()

    code, report, everything = diag_json("--sample", "2", "--timeout", "2", config=config)
    assert code == 1 and report["agent_running"] is False and report["node_id"] == "diag-node"
    checks = by_subject(report)
    assert checks["config"]["status"] == "OK"
    assert checks["state dir"]["status"] == "OK" and checks["state dir"]["data"]["free_bytes"] > 0
    api = checks["REST API"]
    assert api["status"] == "WARN" and "not running" in api["detail"]
    broker = checks["broker"]
    assert broker["status"] == "OK" and broker["data"]["round_trip_ms"] > 0
    assert f"{good[:8]}" in " ".join(checks)
    resolved = checks[f"task yard ({good[:8]}) input 0 resolve"]
    assert resolved["status"] == "OK" and f"rtsp://***@127.0.0.1:{rtsp_h264.port}/test" in resolved["detail"]
    assert checks[f"task yard ({good[:8]}) input 0 open"]["data"]["codec"] == "h264"
    assert checks[f"task yard ({good[:8]}) input 0 decode"]["status"] == "OK"
    dead_open = checks[f"task gate ({bad[:8]}) input 0 open"]
    assert dead_open["status"] == "FAIL" and "connection refused" in dead_open["detail"] and dead_open["hint"]
    assert checks[f"webhook {webhook_receiver.url}"]["status"] == "OK"
    dead_sink = checks[f"webhook {dead_webhook}"]
    assert dead_sink["status"] == "FAIL" and "refused" in dead_sink["detail"]
    assert "Start the receiver" in dead_sink["hint"]
    event_center = checks["event_center (MQTT)"]
    assert event_center["status"] == "OK" and good[:8] in event_center["detail"]
    assert bad[:8] not in event_center["detail"]
    assert checks["outbox webhook"]["status"] in ("OK", "WARN")  # read from outbox.db
    assert "dead letter" in checks["outbox webhook"]["detail"]
    assert not [r for r in webhook_receiver.requests if r.method == "HEAD" and "x-secret" in r.headers]
    assert_no_secret(everything)


@pytest.mark.integration
def test_running_agent_is_asked_through_its_api(
        box: tuple[Path, Path], rtsp_h264: RtspServer, webhook_receiver: WebhookReceiver, tmp_path: Path) -> None:
    config, _ = box
    runtime = AgentRuntime(load_settings(config))
    runtime.start()
    try:
        task_id = runtime.service.create("p", "intrusion-detection", task_body(
            rtsp_h264.url_with("admin", RTSP_PASSWORD), webhook_receiver.url, "yard"))
        wait_running(runtime, task_id)
        code, out, err = diag("--sample", "2", "--timeout", "3", config=config)
        assert code == 0, out + err
        assert "agent running" in out.splitlines()[0]
        assert not [line for line in out.splitlines() if line.startswith(("FAIL", "WARN"))], out
        in_agent = next(line for line in out.splitlines() if f"task yard ({task_id[:8]}) input 0 in the agent" in line)
        assert in_agent.startswith("OK") and "running:" in in_agent and "fps in" in in_agent  # from the task view
        assert "API token" in out and "accepted" in out
        workers = next(line for line in out.splitlines() if line.split()[1:2] == ["workers"])
        assert workers.startswith("OK") and "1 task(s)" in workers and "MiB" in workers  # from /metrics
        assert_no_secret(out + err)

        # a config whose token the running agent does not know
        other = tmp_path / "other.toml"
        other.write_text(config.read_text().replace(API_TOKEN, "not-the-agents-token"))
        code, report, _ = diag_json("--sample", "1", "--timeout", "3", config=other)
        assert code == 1
        checks = by_subject(report)
        assert checks["API token"]["status"] == "FAIL" and checks["API token"]["hint"]
        in_agent = checks[f"task yard ({task_id[:8]}) input 0 in the agent"]  # the task view needs the token
        assert in_agent["status"] == "WARN" and "API token" in in_agent["detail"]
    finally:
        runtime.stop()


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the store to another user")
def test_stores_of_another_user_are_not_opened(tmp_path: Path) -> None:
    from agent.outputs.outbox import Outbox
    from agent.tasks.store import TaskStore

    state = tmp_path / "state"
    TaskStore(state).close()
    Outbox(state / "outbox.db").close()
    for name in ("tasks.db", "outbox.db"):
        os.chown(state / name, 65534, 65534)
    before = sorted(p.name for p in state.iterdir())
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\n[api]\nlisten = "127.0.0.1:{free_port()}"\ntoken = "{API_TOKEN}"\n')
    code, report, _ = diag_json("--timeout", "1", config=config)
    checks = by_subject(report)
    for name in ("tasks.db", "outbox.db"):
        assert checks[name]["status"] == "WARN" and "sudo -u" in checks[name]["hint"]
    assert code == 0  # nothing failed: diag just could not look
    assert sorted(p.name for p in state.iterdir()) == before  # no WAL or journal file created as root


@pytest.mark.integration
def test_broker_down_fails_with_a_hint_and_the_rest_goes_on(tmp_path: Path) -> None:
    broker_port = free_port()  # nothing listens
    (tmp_path / "state").mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[api]\nlisten = "127.0.0.1:{free_port()}"\n'
                      f'token = "{API_TOKEN}"\n[outbox]\nmax_bytes = 1048576\n'
                      f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n'
                      f'username = "u"\npassword = "{RTSP_PASSWORD}"\n')
    code, out, err = diag("--timeout", "2", config=config)
    assert code == 1
    lines = out.splitlines()
    broker = next(line for line in lines if line.startswith("FAIL") and " broker " in line)
    assert f"127.0.0.1:{broker_port}: connection refused" in broker
    assert "mqtt.host and mqtt.port" in lines[lines.index(broker) + 1]
    assert any(line.startswith("OK") and "state dir" in line for line in lines)
    assert_no_secret(out + err)
