"""``edgecamera`` inputs: a camera bound to this edge node, resolved the way KubeEdge/IEF do it.

Order: the node's membership list (``devices[].attributes.rtsp.value``), then the device twin
(property ``rtsp``, actual before expected), then the ``cameras`` registry of the agent config.
Without MQTT settings only the registry is asked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from agent.redact import mask_url
from agent.settings import Camera
from agent.sources.resolvers.base import (
    InputRef,
    InputResolver,
    OnChange,
    ResolveError,
    Unsubscribe,
    check_remote_url,
    no_unsubscribe,
)
from agent.sources.resolvers.twin import (
    DeviceTwinClient,
    TwinTimeout,
    device_updated,
    membership_get,
    twin_get,
    twin_update_document,
)
from agent.sources.target import StreamTarget
from agent.tasks.errors import invalid

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 5.0
RTSP_PROPERTY = "rtsp"


def _value(holder: Any) -> str | None:
    """``{"value": "x"}`` → ``"x"``; anything else (missing, empty, not a string) → None."""
    if isinstance(holder, dict):
        value = holder.get("value")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def twin_property(twin: Any, name: str = RTSP_PROPERTY) -> str | None:
    """A twin property's value, the reported (actual) one before the desired (expected) one."""
    prop = twin.get(name) if isinstance(twin, dict) else None
    if not isinstance(prop, dict):
        return None
    return _value(prop.get("actual")) or _value(prop.get("expected"))


def url_in_membership(answer: dict[str, Any], device_id: str) -> str | None:
    devices = answer.get("devices")
    for device in devices if isinstance(devices, list) else ():
        if isinstance(device, dict) and device.get("id") == device_id:
            attributes = device.get("attributes")
            from_attribute = _value(attributes.get(RTSP_PROPERTY)) if isinstance(attributes, dict) else None
            return from_attribute or twin_property(device.get("twin"))
    return None


def url_in_update(topic: str, payload: dict[str, Any]) -> str | None:
    """The camera URL an ``.../updated`` or ``.../twin/update/document`` notification carries, if any."""
    if topic.endswith("/twin/update/document"):
        twin = payload.get("twin")
        prop = twin.get(RTSP_PROPERTY) if isinstance(twin, dict) else None
        current = prop.get("current") if isinstance(prop, dict) else None
        return twin_property({RTSP_PROPERTY: current})
    attributes = payload.get("attributes")
    return _value(attributes.get(RTSP_PROPERTY)) if isinstance(attributes, dict) else None


class EdgeCameraResolver(InputResolver):
    kind = "edgecamera"

    def __init__(self, node_id: str, cameras: Sequence[Camera], twin: DeviceTwinClient | None, *,
                 timeout_s: float = LOOKUP_TIMEOUT_S) -> None:
        self._node_id = node_id
        self._cameras = {camera.id: camera.url for camera in cameras}
        self._twin = twin
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        # (task id, input index) → the URL last handed to or announced for that input; per input, so two
        # tasks watching one camera both hear of a change
        self._known: dict[tuple[str, int], str] = {}

    def check(self, ref: InputRef) -> None:
        camera_id = ref.data.id or ""
        if self._twin is None and camera_id not in self._cameras:
            raise invalid(f"{ref.field}.id", f"camera {camera_id!r} is not in the agent's cameras registry",
                          "Add it under [[cameras]] in agent.toml, or configure [mqtt] to ask the node's "
                          "device twin.")

    def resolve(self, ref: InputRef) -> StreamTarget:
        camera_id = ref.data.id or ""
        url, twin_problem = self._from_twin(camera_id)
        if url is None:
            url = self._cameras.get(camera_id)
            if url is None:
                raise ResolveError(f"edgecamera {camera_id}: {twin_problem or 'not known'}; it is not in the "
                                   "agent's cameras registry either",
                                   retryable=self._twin is not None)
            if twin_problem:
                log.info("edgecamera %s: %s; using the cameras registry", camera_id, twin_problem)
        with self._lock:
            self._known[(ref.task_id, ref.index)] = url
        log.info("edgecamera %s resolved to %s", camera_id, mask_url(url))
        return StreamTarget(url=url)

    def _from_twin(self, camera_id: str) -> tuple[str | None, str | None]:
        """(url, None) from EdgeCore, or (None, why not)."""
        if self._twin is None:
            return None, None
        what = f"edgecamera {camera_id}"
        try:
            answer = self._twin.request(membership_get(self._node_id), self._timeout_s)
            found = url_in_membership(answer, camera_id)
            if found is None:
                twin_answer = self._twin.request(twin_get(camera_id), self._timeout_s)
                found = twin_property(twin_answer.get("twin"))
        except TwinTimeout as exc:
            return None, str(exc)
        if found is None:
            return None, (f"node {self._node_id} lists no rtsp attribute for it and its device twin has "
                          "no rtsp property")
        return check_remote_url(found, f"{what}: the rtsp property"), None

    def watch(self, ref: InputRef, on_change: OnChange) -> Unsubscribe:
        if self._twin is None:
            return no_unsubscribe
        camera_id = ref.data.id or ""
        key = (ref.task_id, ref.index)

        def changed(topic: str, payload: dict[str, Any]) -> None:
            url = url_in_update(topic, payload)
            if url is None:
                return
            with self._lock:
                if self._known.get(key) == url:
                    return
                self._known[key] = url
            log.info("edgecamera %s: URL changed to %s (%s)", camera_id, mask_url(url), topic)
            on_change(f"edgecamera {camera_id}: the rtsp URL changed ({topic})")

        unsubscribes = [self._twin.subscribe(device_updated(camera_id), changed),
                        self._twin.subscribe(twin_update_document(camera_id), changed)]

        def unsubscribe() -> None:
            for undo in unsubscribes:
                undo()
            with self._lock:
                self._known.pop(key, None)

        return unsubscribe

    def close(self) -> None:
        if self._twin is not None:
            self._twin.close()
