"""Control requests without a transport: one request payload in, the answer the REST API would give out.

The MQTT link (``control/mqtt.py``) hands every payload from its request topic to ``RequestHandler``
and publishes the ``Reply``; nothing here knows about MQTT connections, topics or acknowledgements.
The envelope (``request_id``, ``op``, ``token``) and the ops are documented in docs/mqtt.md.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from agent.control.payload import decode_json
from agent.redact import mask_text
from agent.tasks.errors import ApiError, ErrorCode, internal, invalid
from agent.tasks.service import TaskService

log = logging.getLogger(__name__)

OPS = ("create", "update", "delete", "start", "stop", "show", "list")
MUTATING_OPS = frozenset({"create", "update", "delete", "start", "stop"})
REQUEST_ID_MAX = 128
_PEEK_BYTES = 4096
# Reads a request id out of a payload that is too big or not JSON, so the sender still gets its 400.
_PEEK_REQUEST_ID = re.compile(rb'"request_id"\s*:\s*"([^"\\\x00-\x1f]{1,128})"')


@dataclass(frozen=True)
class Reply:
    """The answer to one request. ``request_id`` None: the sender could not be told which request it was."""

    request_id: str | None
    status: int
    body: Any
    duplicate: bool = False

    def payload(self) -> bytes:
        return json.dumps({"request_id": self.request_id, "status": self.status, "body": self.body},
                          ensure_ascii=False, separators=(",", ":")).encode()


class RequestHandler:
    """Turns one request payload into exactly the answer the REST API would give.

    Answers of mutating ops that reached the TaskService are remembered by request id in the task
    store (so they survive restarts); a repeated request id gets the first answer again and does not
    run twice. Refusals that happen before (bad envelope, bad token) and internal errors are not
    remembered: a corrected retry with the same id must still be able to succeed.
    """

    def __init__(self, service: TaskService, *, max_bytes: int, control_token: str | None) -> None:
        self._service = service
        self._max_bytes = max_bytes
        self._token = control_token.encode() if control_token else None

    def handle(self, raw: bytes) -> Reply:
        if len(raw) > self._max_bytes:
            return _error_reply(_peek_request_id(raw), invalid("payload", f"is larger than {self._max_bytes} bytes"))
        try:
            data = decode_json(raw, limit=self._max_bytes)
        except ApiError as exc:
            return _error_reply(_peek_request_id(raw), exc)
        if not isinstance(data, dict):
            return _error_reply(None, invalid("payload", "must be a JSON object"))
        request_id = _valid_request_id(data.get("request_id"))
        if request_id is None:
            return _error_reply(None, invalid("request_id", f"must be a string of 1-{REQUEST_ID_MAX} printable"
                                                            " characters"))
        if self._token is not None:
            given = data.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self._token):
                return _error_reply(request_id, _unauthorized("missing or wrong token"))
        stored = self._service.answer_for(request_id)
        if stored is not None:
            return Reply(request_id, int(stored["status"]), stored["body"], duplicate=True)
        op = data.get("op")
        if not isinstance(op, str) or op not in OPS:
            return _error_reply(request_id, invalid("op", f"must be one of {', '.join(OPS)}"))
        try:
            reply = Reply(request_id, 200, self._dispatch(op, data))
        except ApiError as exc:
            reply = _error_reply(request_id, exc)
        except Exception:  # the answer says only "internal"; the log has the trace
            log.exception("mqtt %s request %s failed", op, mask_text(request_id))
            return _error_reply(request_id, internal())
        if op in MUTATING_OPS and reply.status < 500:
            self._service.remember_answer(request_id, {"status": reply.status, "body": reply.body})
        return reply

    def _dispatch(self, op: str, data: dict[str, Any]) -> Any:
        project_id = _string(data, "project_id")
        if op == "create":
            service_name = _string(data, "service_name")
            template = _optional_string(data, "template")
            task_id = self._service.create(project_id, service_name, data.get("body"), template=template)
            return {"tasks": [{"id": task_id}]}
        if op == "list":
            query = data.get("body") or {}
            if not isinstance(query, dict):
                raise invalid("body", "must be a JSON object")
            page = _optional_int(query, "page", "body.page")
            page_size = _optional_int(query, "page_size", "body.page_size")
            return self._service.list_tasks(
                project_id,
                state=_optional_string(query, "task_state") or None,
                name=_optional_string(query, "task_name") or None,
                page=0 if page is None else page,
                page_size=100 if page_size is None else page_size,
            )
        task_id = _string(data, "task_id")
        if op == "show":
            return self._service.show(project_id, task_id)
        if op == "update":
            self._service.update(project_id, task_id, data.get("body"))
        elif op == "delete":
            self._service.delete(project_id, task_id)
        elif op == "start":
            self._service.start(project_id, task_id)
        else:
            self._service.stop(project_id, task_id)
        return {}  # REST answers these with an empty body; an empty object keeps "body" always an object


def _unauthorized(reason: str) -> ApiError:
    return ApiError(ErrorCode.UNAUTHORIZED, "authorization failed", ["token"], reason,
                    'Send the agent\'s MQTT control token as "token" in the request.')


def _error_reply(request_id: str | None, exc: ApiError) -> Reply:
    return Reply(request_id, exc.http_status, exc.body())


def _peek_request_id(raw: bytes) -> str | None:
    found = _PEEK_REQUEST_ID.search(raw[:_PEEK_BYTES])
    if found is None:
        return None
    try:
        return found.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _valid_request_id(value: Any) -> str | None:
    if isinstance(value, str) and 1 <= len(value) <= REQUEST_ID_MAX and value.isprintable():
        return value
    return None


def _string(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        raise invalid(key, "is required")
    if not isinstance(value, str):
        raise invalid(key, "must be a string")
    return value


def _optional_string(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(key, "must be a string")
    return value


def _optional_int(data: dict[str, Any], key: str, path: str) -> int | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise invalid(path, "must be an integer")
    return value
