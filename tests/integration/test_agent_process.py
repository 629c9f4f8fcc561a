"""A real ``edge-agent run`` process driven over HTTP, and the CLI as its client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.agent_process import AgentFactory
from tests.tasks.examples import DOC_EXAMPLES, DOC_URL, body

pytestmark = pytest.mark.integration


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(config), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


# The documented examples name algorithm versions and a video source this box does not have; the
# in-process API tests take them verbatim, a real agent takes them with what is installed here.
LOCAL_SOURCE = '[[video_sources]]\nid = "xxxxxxx-xxxxxxx-xxxxxxx-xxxxx-xxxxxx"\nurl = "rtsp://127.0.0.1:9/none"\n'
SERVICE = "video-quality-diagnosis"


def local(raw: dict[str, object], **changes: object) -> dict[str, object]:
    return body(raw, service_version="1.0", config={"common": {}}, **changes)


def test_rest_api_of_a_real_process_survives_restart(agent_factory: AgentFactory) -> None:
    agent = agent_factory(LOCAL_SOURCE)
    with agent.client() as client:
        ids = []
        for name, raw in DOC_EXAMPLES.items():
            response = client.post(f"/v2/p1/services/{SERVICE}/tasks", json=local(raw, name=f"doc-{name}"))
            assert response.status_code == 200, response.text
            ids.append(response.json()["tasks"][0]["id"])
        assert client.put(f"/v2/p1/tasks/{ids[0]}/action/stop").status_code == 200
        assert client.get("/v2/p1/tasks").json()["count"] == 3
        assert client.get("/v2/p1/tasks", headers={"X-Auth-Token": "nope"}).status_code == 401
    assert agent.stop(signal.SIGTERM) == 0
    agent.start()
    with agent.client() as client:
        listed = client.get("/v2/p1/tasks").json()
        assert sorted(t["id"] for t in listed["tasks"]) == sorted(ids)
        assert client.get(f"/v2/p1/tasks/{ids[0]}").json()["desired_state"] == "STOPPED"


def test_cli_drives_the_local_api(agent_factory: AgentFactory) -> None:
    agent = agent_factory()
    created = cli(agent.config, "task", "--project", "p1", "create", "--service-name", SERVICE, "-",
                  stdin=json.dumps(local(DOC_URL)))
    assert created.returncode == 0, created.stderr
    task_id = json.loads(created.stdout)["tasks"][0]["id"]
    listed = cli(agent.config, "task", "--project", "p1", "list")
    assert task_id in listed.stdout
    assert cli(agent.config, "task", "--project", "p1", "stop", task_id).returncode == 0
    shown = json.loads(cli(agent.config, "task", "--project", "p1", "show", task_id).stdout)
    assert shown["desired_state"] == "STOPPED"
    duplicate = cli(agent.config, "task", "--project", "p1", "create", "--service-name", SERVICE, "-",
                    stdin=json.dumps(local(DOC_URL)))
    assert duplicate.returncode == 1 and "VIAS.00010011" in duplicate.stdout
    assert cli(agent.config, "task", "--project", "p1", "delete", task_id).returncode == 0


def test_validate_command(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    good = tmp_path / "good.json"
    good.write_text(json.dumps(DOC_URL))
    assert cli(config, "validate", str(good)).returncode == 0
    refused = cli(config, "validate", "--service-name", "intrusion-detection", str(good))
    assert refused.returncode == 1 and json.loads(refused.stdout)["params"] == ["service_version"]
    good.write_text(json.dumps(local(DOC_URL)))
    assert cli(config, "validate", "--service-name", SERVICE, str(good)).returncode == 0
    algorithms = cli(config, "algorithms")
    assert algorithms.returncode == 0 and "intrusion-detection" in algorithms.stdout
    bad = cli(config, "validate", "-", stdin=json.dumps(body(DOC_URL, webhok={})))
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["params"] == ["webhok"]
    assert cli(config, "validate", "-", stdin="{not json").returncode == 1
    assert cli(config, "version").stdout.startswith("edge-agent ")


def test_bad_config_is_reported_with_its_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[api]\nlisten = "nowhere"\n')
    result = cli(config, "run")
    assert result.returncode == 78 and "api" in result.stderr  # EX_CONFIG: systemd does not restart
    config.write_text('[apii]\nlisten = "127.0.0.1:1"\n')
    result = cli(config, "run")
    assert result.returncode == 78 and "apii" in result.stderr
