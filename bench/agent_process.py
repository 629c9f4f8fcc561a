"""The agent the benches measure: a real ``edge-agent run`` as a user runs it, driven through its REST API.

The process itself (a config file, ``python -m agent … run``, up once ``/healthz`` answers, SIGTERM then
SIGKILL) is the integration tests' ``AgentProcess`` (tests/fixtures/agent_process.py); this adds what
every bench does around it: a temp dir for config and state, a client with the token, tasks, ``/metrics``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.fixtures.agent_process import AgentProcess, write_config
from tests.fixtures.ports import free_port

REPO = Path(__file__).resolve().parents[1]
PROJECT = "bench"


class BenchAgent:
    """``edge-agent run`` of the agent in ``code`` (``python_path`` after it on PYTHONPATH), up and answering.

    ``extra`` holds more TOML tables for its config, ``top`` more top-level keys (``media_roots``). Its
    output goes to ``log``, emptied first, or to a file in the temp dir that goes with it.
    """

    def __init__(self, extra: str = "", *, top: str = "", log: Path | None = None, code: Path = REPO,
                 python_path: Sequence[Path] = (), up_within: float = 60.0) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="bench-agent-"))
        config = self._directory / "agent.toml"
        port = free_port()
        write_config(config, self._directory / "state", port, extra, top=top)
        if log is None:
            log = self._directory / "agent.log"
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_bytes(b"")
        pythonpath = os.pathsep.join(str(folder) for folder in (code, *python_path))
        self._agent = AgentProcess(config, port, log, {"PYTHONPATH": pythonpath}, cwd=code)
        self.client = self._agent.client(timeout=30.0)  # a scrape of dozens of busy tasks on a full box
        try:
            self._agent.start(up_within)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self._agent.process is not None, "stopped"
        return self._agent.process.pid

    def create(self, service: str, body: dict[str, Any]) -> str:
        """A task from a create-task body; its id."""
        answer = self.client.post(f"/v2/{PROJECT}/services/{service}/tasks", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"creating {body.get('name')!r} ({service}) refused: HTTP {answer.status_code} "
                               f"{answer.text}")
        task_id: str = answer.json()["tasks"][0]["id"]
        return task_id

    def task(self, task_id: str) -> dict[str, Any]:
        """The task's view: state, status, inputs."""
        answer = self.client.get(f"/v2/{PROJECT}/tasks/{task_id}")
        answer.raise_for_status()
        view: dict[str, Any] = answer.json()
        return view

    def delete(self, task_id: str) -> None:
        self.client.delete(f"/v2/{PROJECT}/tasks/{task_id}").raise_for_status()

    def metrics(self) -> list[Sample]:
        """Every sample of one scrape of ``/metrics``."""
        text = self.client.get("/metrics").text
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it is still there after 15 s); the temp dir goes with it."""
        self.client.close()
        if self._agent.process is not None:
            self._agent.stop()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> BenchAgent:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
