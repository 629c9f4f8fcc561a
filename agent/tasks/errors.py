"""The one error body of the task API (REST and MQTT alike) and the VIAS error codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ErrorCode(Enum):
    """VIAS error codes with the HTTP status each one is answered with."""

    INVALID_PARAMS = ("VIAS.00010001", 400, "Invalid parameters.")
    NOT_FOUND = ("VIAS.00010002", 404, "The object does not exist.")
    ALREADY_EXISTS = ("VIAS.00010003", 400, "The object already exists.")
    INVALID_OBJECT = ("VIAS.00010004", 400, "The object or parameter is invalid.")
    UNAUTHORIZED = ("VIAS.00010005", 401, "Authorization failed.")
    INTERNAL = ("VIAS.00010006", 500, "Internal error.")
    NO_SUCH_TASK = ("VIAS.00010007", 404, "No task exists for the task ID.")
    DUPLICATE_NAME = ("VIAS.00010011", 400, "A task with the same name already exists.")
    NOT_ALLOWED = ("VIAS.00010012", 400, "The operation is not allowed in the task's current state.")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return int(self.value[1])

    @property
    def message(self) -> str:
        return self.value[2]


@dataclass
class ApiError(Exception):
    """A rejected request. ``params`` names the field path (at most one, as the API documents)."""

    code: ErrorCode
    detail: str
    params: list[str] = field(default_factory=list)
    reason: str = ""
    advice: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    @property
    def http_status(self) -> int:
        return self.code.http_status

    def body(self) -> dict[str, Any]:
        return {
            "error_code": self.code.code,
            "error_msg": self.code.message,
            "detail": self.detail,
            "params": self.params[:1],
            "reason": self.reason or self.detail,
            "advice": self.advice,
        }


def invalid(path: str, reason: str, advice: str = "") -> ApiError:
    return ApiError(ErrorCode.INVALID_PARAMS, f"{path}: {reason}" if path else reason, [path] if path else [],
                    reason, advice or "Correct the parameter and send the request again.")


def missing_section(path: str, section: str) -> ApiError:
    """A task needs a part of the agent's config that is absent (obs or dis): the field and the section."""
    return invalid(path, f"this agent has no [{section}] section in its config file",
                   f"Add [{section}] (endpoint, region, keys; see docs/configuration.md) and restart the agent.")


def unsupported(path: str, reason: str, advice: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_OBJECT, f"{path}: {reason}", [path], reason, advice)


def no_such_task(task_id: str) -> ApiError:
    # The id is echoed only after it passed the id format check, so it cannot carry anything hostile.
    return ApiError(ErrorCode.NO_SUCH_TASK, f"no task with id {task_id}", ["task_id"], "unknown task id",
                    "List tasks with GET /v2/{project_id}/tasks to find the id.")


def unauthorized(reason: str = "missing or wrong token") -> ApiError:
    return ApiError(ErrorCode.UNAUTHORIZED, "authorization failed", [], reason,
                    "Send the agent's API token in the X-Auth-Token header.")


def internal(reason: str = "unexpected error") -> ApiError:
    return ApiError(ErrorCode.INTERNAL, "internal error", [], reason, "See the agent's log; retry later.")
