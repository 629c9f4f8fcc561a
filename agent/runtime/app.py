"""The composition root: builds every part of a running agent from its settings and joins them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from agent import __version__
from agent.api_token import api_token
from agent.control.http import ApiServer, create_app
from agent.control.mqtt import MqttControl
from agent.outputs.router import ResultRouter
from agent.redact import secrets
from agent.runtime import sdnotify
from agent.runtime.checks import start_checks, static_checks
from agent.runtime.metrics import MetricsEndpoint, MetricSources
from agent.runtime.supervisor import Supervisor, utc_now
from agent.runtime.workers import WorkerPool
from agent.settings import AgentSettings, config_secrets
from agent.sources.resolvers.registry import ResolverSet
from agent.tasks.service import TaskService
from agent.tasks.store import TaskError, TaskStore

log = logging.getLogger(__name__)

DEAD_LETTER_CODE = "VIAS.00010004"  # the request was valid, the destination refuses it


class AgentRuntime:
    def __init__(self, settings: AgentSettings, *, clock: Callable[[], datetime] = utc_now,
                 realtime_files: bool = True) -> None:
        self.settings = settings
        self.started_at = time.time()
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = api_token(settings, create=True)
        # a token the agent generated lives in the state directory, not in the configuration
        secrets.register("config", [*config_secrets(settings), token])
        self.store = TaskStore(settings.state_dir)
        self.resolvers = ResolverSet(settings)
        self.service = TaskService(self.store, checks=static_checks(settings, self.resolvers),
                                   max_tasks=settings.limits.max_tasks, max_inputs=settings.limits.max_inputs)
        self.router = ResultRouter(settings, on_dead_letter=self._dead_lettered)
        self.workers = WorkerPool(settings, self.router, self.resolvers, realtime_files=realtime_files)
        self.supervisor = Supervisor(self.service, self.workers, checks=start_checks(settings, self.resolvers),
                                     clock=clock)
        self.metrics = MetricsEndpoint(MetricSources(
            node_id=settings.node_id, started_at=self.started_at, healthy=self.healthy,
            pipelines=self.supervisor.pipelines, router=self.router.status, workers=self.workers.workers,
            streams=self.workers.streams,
            control_connected=lambda: None if self.mqtt_control is None else self.mqtt_control.connected))
        app = create_app(self.service, token, extra_status=self._health, dead_letters=self.router.dead_letters,
                         metrics=self.metrics.render)
        self.api = ApiServer(app, settings.api.host, settings.api.port)
        # MQTT control plane: absent [mqtt] means REST only
        self.mqtt_control = (MqttControl(settings, self.service, started_at=self.started_at)
                             if settings.mqtt is not None else None)
        self.watchdog = sdnotify.Watchdog.from_environment(self.healthy)
        self._stopped = threading.Event()

    def _dead_lettered(self, task_id: str, sink: str, reason: str) -> None:
        """An event given up on shows in its task's state (the reason repeats per event: stored once)."""
        self.service.report(task_id, error=TaskError(DEAD_LETTER_CODE, f"output.{sink}: events dead-lettered: "
                                                                       f"{reason}"))

    def healthy(self) -> bool:
        """The supervisor's loop and every task worker are turning (what the systemd watchdog checks)."""
        return self.supervisor.healthy()

    def status_line(self) -> str:
        """One line for `systemctl status`: what runs and whether results get out."""
        pipelines = self.supervisor.pipelines()
        abnormal = sum(1 for p in pipelines if p.state.value == "ABNORMAL")
        backlog = sum(s.backlog for s in self.router.status().sinks)
        mqtt = "" if self.mqtt_control is None else (
            ", mqtt connected" if self.mqtt_control.connected else ", mqtt DISCONNECTED")
        return (f"{len(pipelines)} task(s) running ({abnormal} abnormal), outbox backlog {backlog}{mqtt}")

    def _health(self) -> dict[str, object]:
        router = self.router.status()
        return {
            "version": __version__,
            "node_id": self.settings.node_id,
            "uptime_s": round(time.time() - self.started_at, 1),
            "healthy": self.healthy(),
            "mqtt_connected": None if self.mqtt_control is None else self.mqtt_control.connected,
            "running_tasks": len(self.supervisor.pipelines()),
            "outbox": {s.sink: {"backlog": s.backlog, "dead_letters": s.dead_letters} for s in router.sinks},
        }

    def start(self) -> None:
        self.router.start()
        self.workers.start()
        self.supervisor.start()
        self.supervisor.wait_idle(timeout=10.0)
        self.api.start()
        if self.mqtt_control is not None:  # connects in the background; never waits for the broker
            self.mqtt_control.start()
        sdnotify.ready(self.status_line())  # STATUS= shows from the moment the unit is active
        if self.watchdog is not None:
            self.watchdog.start()
        log.info("edge-agent %s up: REST API on http://%s", __version__, self.settings.api.listen,
                 extra={"node_id": self.settings.node_id})

    def stop(self) -> None:
        """Graceful: stop taking requests, close streams, commit in-flight events, close the stores."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        sdnotify.stopping()
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog.join(5.0)
        if self.mqtt_control is not None:  # before the store closes: it answers from the store
            self.mqtt_control.stop(timeout=3.0)
        self.supervisor.stop()  # stops the workers, their last events committed
        self.router.stop(timeout=2.0)
        self.resolvers.close()
        self.api.stop(timeout=2.0)
        self.store.close()
        log.info("edge-agent stopped")
