"""The running agent, asked through its REST API: /healthz, the token, /metrics, and each task's view."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agent.diag.options import DiagOptions
from agent.diag.report import Check, Level, masked_check
from agent.redact import secrets
from agent.settings import AgentSettings

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]  # (name, labels) → value, from /metrics


class TaskViewError(Exception):
    """The agent's view of a task could not be read; the message says why (one line, no secret)."""


class TaskViews:
    """Each task as the running agent shows it (``GET /v2/{project}/tasks/{id}``): the per-input state its
    pipeline reports (state, fps, reconnects, last error), which the store does not keep."""

    def __init__(self, base_url: str, token: str, timeout_s: float) -> None:
        self._base_url = base_url
        self._token = token
        self._timeout_s = timeout_s

    def inputs(self, project_id: str, task_id: str) -> list[dict[str, Any]]:
        """The ``inputs`` of the task's view; empty when no pipeline runs it. Raises TaskViewError."""
        import httpx

        try:
            reply = httpx.get(f"{self._base_url}/v2/{project_id}/tasks/{task_id}",
                              headers={"X-Auth-Token": self._token}, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            raise TaskViewError(f"{type(exc).__name__}: {exc}") from None
        if reply.status_code == 404:
            raise TaskViewError("the running agent does not know this task")
        if reply.status_code != 200:
            raise TaskViewError(f"the task view answered HTTP {reply.status_code}")
        try:
            inputs = reply.json().get("inputs")
        except (ValueError, AttributeError):
            inputs = None
        if not isinstance(inputs, list):
            raise TaskViewError("the task view has no inputs list")
        return [item for item in inputs if isinstance(item, dict)]


@dataclass(frozen=True)
class AgentView:
    """What the running agent says about itself."""

    health: dict[str, Any]
    metrics: Metrics
    tasks: TaskViews | None = field(default=None, repr=False)  # None without a token the agent accepts

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.get((name, frozenset(labels.items())))

    def has(self, name: str) -> bool:
        return any(found == name for found, _ in self.metrics)


def api_base(settings: AgentSettings) -> str:
    host = settings.api.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{settings.api.port}" if ":" in host else f"http://{host}:{settings.api.port}"


def check_api(settings: AgentSettings, options: DiagOptions) -> tuple[list[Check], AgentView | None]:
    """/healthz, the token and /metrics; the view is None when no edge-agent answers."""
    import httpx

    base = api_base(settings)
    try:
        started = time.monotonic()
        response = httpx.get(f"{base}/healthz", timeout=options.timeout_s)
        elapsed_ms = (time.monotonic() - started) * 1000
    except httpx.ConnectError:
        return [masked_check("api", "REST API", Level.WARN,
                             f"nothing listens on {settings.api.listen}: agent not running",
                             "Start it (systemctl start edge-agent); diag went on from the config and state dir."
                             )], None
    except httpx.HTTPError as exc:
        return [masked_check("api", "REST API", Level.FAIL, f"{settings.api.listen}: {type(exc).__name__}: {exc}",
                             "Something holds the port without answering: a hung agent? journalctl -u edge-agent"
                             )], None
    try:
        health = response.json()
    except ValueError:
        health = None
    if response.status_code != 200 or not isinstance(health, dict) or health.get("status") != "ok":
        return [masked_check("api", "REST API", Level.FAIL,
                             f"{settings.api.listen} answers HTTP {response.status_code}, but not as edge-agent",
                             "Another program uses api.listen's port: change api.listen or stop the other program."
                             )], None
    checks: list[Check] = []
    detail = (f"up on {settings.api.listen} in {elapsed_ms:.0f} ms: version {health.get('version')}, "
              f"uptime {health.get('uptime_s')} s, {health.get('running_tasks')} running task(s)")
    if health.get("healthy") is False:
        checks.append(masked_check("api", "REST API", Level.WARN, detail + ", NOT healthy",
                                   "The supervisor or a task worker is stuck; see journalctl -u edge-agent.",
                                   **health))
    else:
        checks.append(masked_check("api", "REST API", Level.OK, detail,
                                   **{k: v for k, v in health.items() if not isinstance(v, dict)}))
    token_check, tasks = _check_token(settings, options, base)
    if token_check is not None:
        checks.append(token_check)
    metrics, metrics_check = _read_metrics(base, options.timeout_s)
    if metrics_check is not None:
        checks.append(metrics_check)
    workers = _check_workers(metrics)
    if workers is not None:
        checks.append(workers)
    return checks, AgentView(health, metrics, tasks)


def _check_token(settings: AgentSettings, options: DiagOptions, base: str) -> tuple[Check | None, TaskViews | None]:
    """Whether the agent accepts this config's token; the task views are readable only when it does."""
    import httpx

    from agent.api_token import api_token

    try:
        token = api_token(settings, create=False)
    except OSError as exc:
        return masked_check("api", "API token", Level.WARN, f"cannot read the token file: {exc.strerror}",
                            "Run diag as the agent's user, who may read api.token_file."), None
    if not token:
        return None, None
    secrets.register("api-token", [token])  # may be the generated one, which the config does not hold
    try:
        reply = httpx.get(f"{base}/v2/{options.project}/tasks", headers={"X-Auth-Token": token},
                          timeout=options.timeout_s)
    except httpx.HTTPError as exc:
        return masked_check("api", "API token", Level.WARN, f"task list unreadable: {type(exc).__name__}"), None
    if reply.status_code == 200:
        return masked_check("api", "API token", Level.OK, "accepted"), TaskViews(base, token, options.timeout_s)
    if reply.status_code == 401:
        return masked_check("api", "API token", Level.FAIL, "the running agent rejects this config's token",
                            "The agent runs with another config or token file: compare api.token/token_file."), None
    return masked_check("api", "API token", Level.WARN, f"task list answered HTTP {reply.status_code}"), None


def _check_workers(metrics: Metrics) -> Check | None:
    """The data-plane worker processes as /metrics shows them: tasks, CPU, memory, up, restarts."""
    prefix = "edge_agent_worker_"
    rows: dict[str, dict[str, float]] = {}
    for (name, labels), value in metrics.items():
        worker = dict(labels).get("worker")
        if worker is not None and name.startswith(prefix):
            rows.setdefault(worker, {})[name.removeprefix(prefix)] = value
    if not rows:
        return None
    parts = []
    for worker in sorted(rows, key=int):
        row = rows[worker]
        parts.append(f"{worker}: {row.get('tasks', 0):.0f} task(s), {row.get('cpu_seconds_total', 0):.0f} s CPU, "
                     f"{row.get('resident_memory_bytes', 0) / 2**20:.0f} MiB")
    restarts = sum(row.get("restarts_total", 0) for row in rows.values())
    detail = f"{len(rows)} worker process(es): " + "; ".join(parts)
    if restarts:
        detail += f"; {restarts:.0f} replaced after a crash"
    down = [worker for worker, row in sorted(rows.items()) if row.get("up") != 1.0]
    if down:
        return masked_check("api", "workers", Level.WARN, f"{detail}; worker(s) {', '.join(down)} down",
                            "A worker died and is being replaced; journalctl -u edge-agent says why.")
    return masked_check("api", "workers", Level.OK, detail)


def _read_metrics(base: str, timeout_s: float) -> tuple[Metrics, Check | None]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    metrics: Metrics = {}
    try:
        text = httpx.get(f"{base}/metrics", timeout=timeout_s).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                metrics[(sample.name, frozenset(sample.labels.items()))] = sample.value
    except (httpx.HTTPError, ValueError) as exc:
        return metrics, masked_check("api", "metrics", Level.WARN, f"/metrics unreadable: {type(exc).__name__}")
    return metrics, None
