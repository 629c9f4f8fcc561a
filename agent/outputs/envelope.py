"""The VIAS result message ("envelope") built from one algorithm Event for one output.

Existing VIAS consumers read ``event_type``, ``task_id``, ``stream_id``, ``message_id``, ``timestamp``,
``image_base64`` and ``data.event_set``; ``service_name``, ``input_index`` and ``frame`` are ours. Images
travel only to outputs whose ``data_category`` names them, so a webhook can get crops while MQTT stays light.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from agent.algorithms.event import Event

SCHEMA_PATH = Path(__file__).with_name("envelope.schema.json")
IMAGE_KEY = "image_base64"


@cache
def envelope_schema() -> dict[str, Any]:
    """The JSON Schema every envelope satisfies (shipped as package data)."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def _pick_image(images: Mapping[str, bytes], wanted: Collection[str]) -> bytes | None:
    """The image of the first wanted category the event has; the output's order is its preference."""
    for category in wanted:
        image = images.get(category)
        if image:
            return image
    return None


def _b64(image: bytes) -> str:
    return base64.b64encode(image).decode("ascii")


def build_envelope(
    event: Event,
    *,
    task_id: str,
    service_name: str,
    stream_id: str,
    message_id: str,
    data_category: Collection[str] | None,
) -> dict[str, Any]:
    """The envelope of ``event`` for an output that asks for ``data_category`` (None: no images)."""
    wanted = tuple(data_category or ())
    items: list[dict[str, Any]] = []
    for index, item in enumerate(event.event_set):
        # An algorithm's own image field must not bypass the output's data_category.
        body = {key: value for key, value in item.items() if key != IMAGE_KEY}
        crops = event.item_images[index] if index < len(event.item_images) else {}
        crop = _pick_image(crops, wanted)
        if crop is not None:
            body[IMAGE_KEY] = _b64(crop)
        items.append(body)
    info = event.frame
    envelope: dict[str, Any] = {
        "event_type": event.event_type,
        "task_id": task_id,
        "stream_id": stream_id,
        "message_id": message_id,
        "timestamp": int(info.captured_at),
        "service_name": service_name,
        "input_index": event.input_index,
        "frame": {
            "pts": info.pts,
            "width": info.width,
            "height": info.height,
            "captured_at_ms": round(info.captured_at * 1000),
        },
        "data": {"event_set": items},
    }
    image = _pick_image(event.images, wanted)
    if image is not None:
        envelope[IMAGE_KEY] = _b64(image)
    return envelope


def encode_envelope(envelope: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; raises TypeError when an algorithm put something non-JSON in its event_set."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
