"""The obs output: every event becomes an object in the task's bucket, its images JPEG objects beside it.

Keys (``path`` and the date of the frame in UTC)::

    {path}/{task_id}/{YYYY}/{MM}/{DD}/{message_id}.json          the envelope the webhook gets, but …
    {path}/{task_id}/{YYYY}/{MM}/{DD}/{message_id}/{category}-{n}.jpg   … images are objects, not base64

``n`` is 0 for the event's whole-frame image and ``i + 1`` for the crop of ``event_set[i]``; the JSON names
them under ``image_objects`` where the webhook's envelope has ``image_base64`` (one key per category of the
output's ``data_category`` that the event has, in that order).

The outbox row holds the JSON to write plus the images (base64, under ``_image_data``), so a restart or a
retry writes exactly the same objects: a PUT of the same key and bytes is idempotent, so an event retried
after a lost answer is stored once. Images go first, the JSON last: whoever sees the JSON finds its images.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.algorithms.event import Event

if TYPE_CHECKING:
    from minio import Minio

from agent.obs_client import failure
from agent.outputs.envelope import build_envelope, encode_envelope
from agent.outputs.outbox import QueuedMessage
from agent.outputs.webhook import DeliveryResult, Outcome

IMAGE_DATA_KEY = "_image_data"  # key → base64 JPEG; in the outbox row only, never in the stored JSON
IMAGE_OBJECTS_KEY = "image_objects"


def event_prefix(path: str, task_id: str, timestamp: int, message_id: str) -> str:
    """``{path}/{task_id}/{YYYY}/{MM}/{DD}/{message_id}``: the JSON is this + ``.json``, images sit under it."""
    day = datetime.fromtimestamp(timestamp, UTC)
    base = path.strip("/")
    return f"{base + '/' if base else ''}{task_id}/{day:%Y}/{day:%m}/{day:%d}/{message_id}"


def obs_payload(event: Event, *, path: str, data_category: Collection[str] | None, task_id: str,
                service_name: str, stream_id: str, message_id: str) -> bytes:
    """The outbox row of one event for an obs output."""
    envelope = build_envelope(event, data_category=None, task_id=task_id, service_name=service_name,
                              stream_id=stream_id, message_id=message_id)
    prefix = event_prefix(path, task_id, envelope["timestamp"], message_id)
    wanted = tuple(data_category or ())
    image_data: dict[str, str] = {}

    def attach(target: dict[str, Any], images: Mapping[str, bytes], n: int) -> None:
        keys = []
        for category in wanted:
            image = images.get(category)
            if image:
                key = f"{prefix}/{category}-{n}.jpg"
                image_data[key] = base64.b64encode(image).decode("ascii")
                keys.append(key)
        if keys:
            target[IMAGE_OBJECTS_KEY] = keys

    attach(envelope, event.images, 0)
    for index, item in enumerate(envelope["data"]["event_set"]):
        if index < len(event.item_images):
            attach(item, event.item_images[index], index + 1)
    if image_data:
        envelope[IMAGE_DATA_KEY] = image_data
    return encode_envelope(envelope)


class ObsSender:
    """Writes a lane's events one after the other (a worker's share of the client's keep-alive pool)."""

    def __init__(self, client: Minio) -> None:
        self._client = client

    def send(self, messages: Sequence[QueuedMessage]) -> list[DeliveryResult]:
        results = []
        for message in messages:
            result = self._write(message)
            results.append(result)
            if result.outcome is Outcome.RETRY:
                break  # the lane waits: a later event must not be stored before this one
        return results

    def close(self) -> None:
        """The client's pool is shared by the workers and closed with the process."""

    def _write(self, message: QueuedMessage) -> DeliveryResult:
        bucket = str(message.destination["bucket"])
        path = str(message.destination["path"])
        try:
            envelope = json.loads(message.payload)
            images: dict[str, str] = envelope.pop(IMAGE_DATA_KEY, {})
            key = event_prefix(path, envelope["task_id"], int(envelope["timestamp"]), envelope["message_id"]) + ".json"
        except (ValueError, KeyError, TypeError) as exc:
            return DeliveryResult(Outcome.PERMANENT, f"unreadable outbox row: {type(exc).__name__}")
        try:
            for image_key, data in images.items():
                self._put(bucket, image_key, base64.b64decode(data), "image/jpeg")
            self._put(bucket, key, encode_envelope(envelope), "application/json")
        except Exception as exc:
            what = failure(exc)
            return DeliveryResult(Outcome.PERMANENT if what.permanent else Outcome.RETRY,
                                  f"writing to bucket {bucket}: {what.reason}")
        return DeliveryResult(Outcome.DELIVERED, f"stored {key}")

    def _put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        self._client.put_object(bucket, key, io.BytesIO(body), len(body), content_type=content_type)
