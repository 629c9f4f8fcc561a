"""The composition root: builds every part of a running agent from its settings and joins them."""

from __future__ import annotations

import logging
import threading
import time

from agent import __version__
from agent.api_token import api_token
from agent.control.http import ApiServer, create_app
from agent.control.mqtt import MqttControl
from agent.redact import secrets
from agent.settings import AgentSettings
from agent.tasks.service import TaskService
from agent.tasks.store import TaskStore

log = logging.getLogger(__name__)


class AgentRuntime:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.started_at = time.time()
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = api_token(settings, create=True)
        secrets.add(token)
        self.store = TaskStore(settings.state_dir)
        self.service = TaskService(self.store, max_tasks=settings.limits.max_tasks,
                                   max_inputs=settings.limits.max_inputs)
        app = create_app(self.service, token, extra_status=self._health)
        self.api = ApiServer(app, settings.api.host, settings.api.port)
        # MQTT control plane (issue 3): absent [mqtt] means REST only
        self.mqtt_control = (MqttControl(settings, self.service, started_at=self.started_at)
                             if settings.mqtt is not None else None)
        self._stopped = threading.Event()

    def _health(self) -> dict[str, object]:
        return {"version": __version__, "node_id": self.settings.node_id,
                "uptime_s": round(time.time() - self.started_at, 1)}

    def start(self) -> None:
        self.api.start()
        if self.mqtt_control is not None:  # connects in the background; never waits for the broker
            self.mqtt_control.start()
        log.info("edge-agent %s up: REST API on http://%s", __version__, self.settings.api.listen,
                 extra={"node_id": self.settings.node_id})

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.mqtt_control is not None:  # before the store closes: it answers from the store
            self.mqtt_control.stop(timeout=5.0)
        self.api.stop()
        self.store.close()
        log.info("edge-agent stopped")
