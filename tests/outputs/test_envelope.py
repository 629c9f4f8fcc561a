from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.algorithms.event import Event
from agent.outputs.envelope import build_envelope, encode_envelope, envelope_schema
from tests.outputs.support import TASK_ID, make_event, validate_envelope

JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"
CROP = b"\xff\xd8crop\xff\xd9"


def _build(event: Event, data_category: list[str] | None) -> dict[str, Any]:
    return build_envelope(event, task_id=TASK_ID, service_name="c-intrusion-detection", stream_id="cam-7",
                          message_id=str(uuid.uuid4()), data_category=data_category)


def test_envelope_has_the_vias_fields_and_ours() -> None:
    event = make_event(3, captured_at=1_750_000_123.456)
    envelope = _build(event, None)
    validate_envelope(envelope)
    assert envelope["event_type"] == 196609
    assert envelope["task_id"] == TASK_ID
    assert envelope["stream_id"] == "cam-7"
    assert envelope["timestamp"] == 1_750_000_123
    assert envelope["frame"] == {"pts": 9003, "width": 1280, "height": 720, "captured_at_ms": 1_750_000_123_456}
    assert envelope["data"]["event_set"][0]["seq"] == 3
    assert "image_base64" not in envelope


def test_images_go_only_to_outputs_that_ask_for_them() -> None:
    event = make_event(images={"image": JPEG}, item_images=({"face_image": CROP},))
    plain = _build(event, None)
    assert "image_base64" not in plain and "image_base64" not in plain["data"]["event_set"][0]
    whole_only = _build(event, ["image"])
    assert base64.b64decode(whole_only["image_base64"]) == JPEG
    assert "image_base64" not in whole_only["data"]["event_set"][0]
    crops_only = _build(event, ["face_image"])
    assert "image_base64" not in crops_only
    assert base64.b64decode(crops_only["data"]["event_set"][0]["image_base64"]) == CROP
    for envelope in (plain, whole_only, crops_only):
        validate_envelope(envelope)


def test_the_first_listed_category_wins() -> None:
    event = make_event(images={"a": b"AAAA", "b": b"BBBB"})
    assert base64.b64decode(_build(event, ["b", "a"])["image_base64"]) == b"BBBB"
    assert base64.b64decode(_build(event, ["x", "a"])["image_base64"]) == b"AAAA"


def test_an_algorithms_own_image_field_cannot_bypass_data_category() -> None:
    event = make_event()
    item = {**event.event_set[0], "image_base64": "c2VjcmV0"}
    sneaky = type(event)(event.event_type, 0, event.frame, (item,))
    assert "image_base64" not in _build(sneaky, None)["data"]["event_set"][0]


def test_null_pts_is_valid() -> None:
    event = make_event()
    frame = type(event.frame)(0, None, None, 5.0, 640, 480)
    envelope = _build(type(event)(65536, 0, frame, ()), None)
    validate_envelope(envelope)
    assert envelope["frame"]["pts"] is None and envelope["data"]["event_set"] == []


def test_schema_rejects_what_consumers_could_not_read() -> None:
    good = _build(make_event(), None)
    for broken in ({**good, "message_id": "not-a-uuid"}, {k: v for k, v in good.items() if k != "stream_id"},
                   {**good, "image_base64": "not base64!"}, {**good, "extra": 1}):
        with pytest.raises(jsonschema.ValidationError):
            validate_envelope(broken)


def test_encoding_is_compact_json_and_refuses_non_json_items() -> None:
    envelope = _build(make_event(), None)
    assert json.loads(encode_envelope(envelope)) == envelope
    event = make_event()
    bad = type(event)(1, 0, event.frame, ({"when": object()},))
    with pytest.raises(TypeError):
        encode_envelope(_build(bad, None))


def test_schema_ships_as_package_data() -> None:
    assert envelope_schema()["$schema"].startswith("https://json-schema.org/draft/2020-12")


@given(
    seq=st.integers(0, 10**6),
    input_index=st.integers(0, 49),
    captured_at=st.floats(0, 4e9, allow_nan=False),
    whole=st.binary(max_size=64),
    crop=st.binary(max_size=64),
    wanted=st.lists(st.sampled_from(["image", "crop", "other"]), max_size=3) | st.none(),
)
def test_every_envelope_is_schema_valid(seq: int, input_index: int, captured_at: float, whole: bytes,
                                        crop: bytes, wanted: list[str] | None) -> None:
    event = make_event(seq, input_index=input_index, captured_at=captured_at, images={"image": whole},
                       item_images=({"crop": crop},))
    envelope = _build(event, wanted)
    validate_envelope(envelope)
    validate_envelope(json.loads(encode_envelope(envelope)))
