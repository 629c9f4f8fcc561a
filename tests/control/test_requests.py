"""The transport-free request handler: every payload gets the REST answer, refusals touch nothing."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.control.requests import RequestHandler
from agent.tasks.service import TaskService
from agent.tasks.store import TaskStore


def test_handler_refuses_before_touching_the_store(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    service = TaskService(store)
    handler = RequestHandler(service, max_bytes=2048, control_token=None)
    try:
        nested = b'{"request_id": "deep", "x": ' + b"[" * 40 + b"]" * 40 + b"}"
        reply = handler.handle(nested)
        assert (reply.request_id, reply.status) == ("deep", 400) and "nests deeper" in reply.body["detail"]
        reply = handler.handle(b'{"request_id": "bad\\nid", "op": "list", "project_id": "p"}')
        assert (reply.request_id, reply.status, reply.body["params"]) == (None, 400, ["request_id"])
        reply = handler.handle(json.dumps({"request_id": "x" * 129, "op": "list", "project_id": "p"}).encode())
        assert (reply.request_id, reply.status) == (None, 400)
        reply = handler.handle(json.dumps({"request_id": "ok", "op": "list", "project_id": "p",
                                           "body": {"page_size": True}}).encode())
        assert reply.body["params"] == ["body.page_size"]
        reply = handler.handle(json.dumps({"request_id": "t", "op": "create", "project_id": "p",
                                           "service_name": "s", "template": "nope"}).encode())
        assert reply.status == 404 and reply.body["params"] == ["template"]
        assert service.answer_for("ok") is None  # reads are not remembered
        assert service.answer_for("t") is not None
    finally:
        store.close()


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=4),
                     max_leaves=20)
_ENVELOPE = st.fixed_dictionaries(
    {"request_id": st.text(min_size=1, max_size=10)},
    optional={"op": st.sampled_from(["create", "update", "delete", "start", "stop", "show", "list", "x"]) | _JSON,
              "project_id": st.sampled_from(["proj", ""]) | _JSON, "service_name": _JSON,
              "task_id": st.sampled_from(["a" * 32]) | _JSON, "body": _JSON, "template": _JSON, "token": _JSON},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=300) | _ENVELOPE.map(lambda e: json.dumps(e).encode()))
def test_no_payload_breaks_the_handler(tmp_path: Path, payload: bytes) -> None:
    store = TaskStore(tmp_path)
    try:
        reply = RequestHandler(TaskService(store), max_bytes=4096, control_token=None).handle(payload)
        assert reply.status in (200, 400, 404)
        json.loads(reply.payload())  # always a valid JSON answer
        if reply.status != 200:
            assert set(reply.body) == {"error_code", "error_msg", "detail", "params", "reason", "advice"}
    finally:
        store.close()
