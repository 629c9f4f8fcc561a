"""The create-task body exactly as the VIAS API documents it, and the stored task record.

Every documented constraint lives here; ``parse_create``/``parse_update`` turn a raw JSON value into a
model or an ``ApiError`` that names the failing field. Values are never echoed in errors: a rejected
password or header value must not travel back in a response or a log line.
"""

from __future__ import annotations

import re
from datetime import time
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.tasks.errors import ApiError, ErrorCode, invalid, unsupported

NAME_RE = r"^[A-Za-z0-9_-]{1,100}$"
SERVICE_VERSION_RE = r"^[a-z0-9.]{3,32}$"
RESOURCE_ORDER_RE = r"^[a-z0-9-_]{4,36}$"
TIMEZONE_RE = re.compile(r"^(?P<sign>[+-])(?P<h>\d{2}):(?P<m>\d{2})$")
CLOCK_RE = r"^([01]\d|2[0-3]):[0-5]\d:[0-5]\d$"
OBS_BUCKET_RE = r"^[a-z0-9](?!.[-.][-.].)([a-z0-9-.]{1,61})[a-z0-9]$"
OBS_PATH_RE = r"^(?![/.\s])(?!.//.)([^:*?\"<>|\\]{0,1023})(?<![.\s])$"
DIS_STREAM_RE = r"^[-A-Za-z0-9_]{1,64}$"
# RFC 7230 token characters for header names; values may hold anything printable but CR, LF and NUL.
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
HEADER_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")
MAX_BODY_BYTES = 1 << 20
TASK_ID_RE = re.compile(r"^[0-9a-f]{32}$")

Bool01 = Annotated[StrictBool | Literal[0, 1], Field()]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


def _check_headers(headers: dict[str, str] | None, *, minimum: int) -> dict[str, str] | None:
    if headers is None:
        return None
    if not minimum <= len(headers) <= 10:
        raise ValueError(f"must hold {minimum} to 10 key-value pairs")
    for name, value in headers.items():
        if not HEADER_NAME_RE.match(name):
            raise ValueError("header names must be HTTP tokens (letters, digits, !#$%&'*+.^_`|~-)")
        if HEADER_VALUE_FORBIDDEN.search(value):
            raise ValueError("header values must not contain CR, LF or NUL")
    return headers


class Period(_Strict):
    begin_at: str = Field(pattern=CLOCK_RE, description="Window start, HH:MM:SS, local to the schedule timezone.")
    end_at: str = Field(pattern=CLOCK_RE, description="Window end, HH:MM:SS; must be after begin_at.")

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.begin_time >= self.end_time:
            raise ValueError("begin_at must be earlier than end_at")
        return self

    @property
    def begin_time(self) -> time:
        return time.fromisoformat(self.begin_at)

    @property
    def end_time(self) -> time:
        return time.fromisoformat(self.end_at)


class TaskSchedule(_Strict):
    type: Literal["weekly"] = Field(description="Only weekly schedules are supported.")
    timezone: str = Field(description="UTC offset of the user's time zone, minute precision, e.g. +08:00.")
    days_of_week: list[Annotated[StrictInt, Field(ge=1, le=7)]] = Field(
        min_length=1, max_length=7, description="Days on which the task runs, 1 = Monday … 7 = Sunday."
    )
    days_of_month: list[int] | None = Field(None, description="Documented but unsupported: rejected.")
    periods: list[list[Period]] = Field(
        min_length=1, max_length=7, description="periods[i] = the time windows of day i+1 (Monday first)."
    )

    @field_validator("timezone")
    @classmethod
    def _offset(cls, value: str) -> str:
        match = TIMEZONE_RE.match(value)
        if match is None or int(match["h"]) > 14 or int(match["m"]) > 59:
            raise ValueError("must be a UTC offset such as +08:00 or -03:30")
        return value

    @field_validator("days_of_week")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("days must not repeat")
        return value

    @model_validator(mode="after")
    def _has_window(self) -> TaskSchedule:
        if not any(self.windows_of(day) for day in self.days_of_week):
            raise ValueError("periods must give at least one time window on a day listed in days_of_week")
        return self

    @property
    def offset_minutes(self) -> int:
        match = TIMEZONE_RE.match(self.timezone)
        assert match is not None
        minutes = int(match["h"]) * 60 + int(match["m"])
        return -minutes if match["sign"] == "-" else minutes

    def windows_of(self, day: int) -> list[Period]:
        """The windows of ``day`` (1 = Monday); none when the day is not scheduled."""
        if day not in self.days_of_week or day > len(self.periods):
            return []
        return self.periods[day - 1]


InputType = Literal["video_source", "obs", "url", "edgecamera", "restful", "vcn"]


class TaskInputData(_Strict):
    index: StrictInt | None = Field(None, ge=0, description="Position of the input, as the API examples send it.")
    video_source_id: str | None = Field(None, min_length=1, max_length=128, description="video_source input.")
    stream_name: str | None = Field(None, max_length=256, description="Name of a video stream.")
    bucket: str | None = Field(None, max_length=64, description="obs input: the bucket of the video object.")
    path: str | None = Field(None, max_length=1023, description="obs input: the key of the video object.")
    url: str | None = Field(None, min_length=1, max_length=1000, description="url input, or restful lookup URL.")
    headers: dict[str, str] | None = Field(None, description="restful lookup headers, at most 10 pairs.")
    rtsp_path_in_response: str | None = Field(
        None, min_length=1, max_length=1024, description="restful: '/'-separated path of the URL in the reply."
    )
    device_id: str | None = Field(None, min_length=1, max_length=256, description="vcn camera code.")
    stream_type: StrictInt | None = Field(None, ge=1, le=3, description="vcn: 1 primary, 2 and 3 secondary.")
    id: str | None = Field(None, min_length=1, max_length=63, description="edgecamera device id.")
    certificate_check: StrictBool = Field(False, description="restful: verify the lookup server's certificate.")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_headers(value, minimum=0)


class TaskInputVcn(_Strict):
    ip: str = Field(min_length=1, max_length=255, description="VCN server address.")
    port: StrictInt = Field(ge=0, le=65535, description="VCN server HTTPS port.")
    username: str = Field(pattern=r"^.{1,100}$", description="VCN account.")
    password: str = Field(pattern=r"^.{1,1000}$", description="VCN password (masked in every output).")


# mandatory data fields per input type, as the API documents them
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "video_source": ("video_source_id",),
    "obs": ("bucket", "path"),
    "url": ("url",),
    "edgecamera": ("id",),
    "restful": ("url", "rtsp_path_in_response"),
    "vcn": ("device_id", "stream_type"),
}


class TaskInput(_Strict):
    type: InputType = Field(description="How the inputs name their cameras.")
    data: list[TaskInputData] = Field(min_length=1, max_length=50, description="1 to 50 inputs.")
    vcn: TaskInputVcn | None = Field(None, description="The VCN server; mandatory for vcn inputs.")

    @model_validator(mode="after")
    def _mandatory(self) -> TaskInput:
        for i, item in enumerate(self.data):
            for name in REQUIRED_FIELDS[self.type]:
                if getattr(item, name) is None:
                    raise _FieldError(f"input.data[{i}].{name}", f"is mandatory for {self.type} inputs")
        if self.type == "vcn" and self.vcn is None:
            raise _FieldError("input.vcn", "is mandatory for vcn inputs")
        return self


class TaskOutputObs(_Strict):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")  # the documented patterns look around

    bucket: str = Field(max_length=63, pattern=OBS_BUCKET_RE, description="Bucket the events are written to.")
    path: str = Field(max_length=1023, pattern=OBS_PATH_RE, description="Key prefix of the event objects.")
    data_category: list[str] | None = Field(None, max_length=10, description="Images written beside each event.")


class TaskOutputDis(_Strict):
    stream_name: str = Field(max_length=64, pattern=DIS_STREAM_RE, description="DIS stream the events go to.")
    data_category: list[str] | None = Field(None, max_length=10, description="Images inlined in each record.")


class TaskOutputWebhook(_Strict):
    url: str = Field(min_length=1, max_length=1000, description="Result callback address (http or https).")
    headers: dict[str, str] = Field(description="1 to 10 headers sent with every callback (values masked).")
    data_category: list[str] | None = Field(None, max_length=10, description="What this output receives.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        checked = _check_headers(value, minimum=1)
        assert checked is not None
        return checked


class TaskOutput(_Strict):
    obs: TaskOutputObs | None = None
    dis: TaskOutputDis | None = None
    webhook: TaskOutputWebhook | None = None
    event_center: Bool01 = Field(False, description="Publish results to the agent's MQTT broker.")

    @model_validator(mode="after")
    def _enabled(self) -> TaskOutput:
        if self.obs is None and self.dis is None and self.webhook is None and not self.event_center:
            raise _FieldError("output", "enable at least one output (webhook, event_center, obs or dis)")
        return self


class TaskServiceConfig(_Strict):
    common: dict[str, Any] = Field(default_factory=dict, description="Algorithm settings, checked per algorithm.")


class TaskSpec(_Strict):
    """The create-task request body."""

    name: str = Field(pattern=NAME_RE, description="1-100 letters, digits, - and _.")
    description: str = Field("", max_length=500)
    schedule: TaskSchedule | None = None
    input: TaskInput
    output: TaskOutput
    config: TaskServiceConfig = Field(default_factory=TaskServiceConfig)
    service_version: str = Field(pattern=SERVICE_VERSION_RE)
    is_saved_as_template: StrictBool = False
    resource_order_id: str | None = Field(None, pattern=RESOURCE_ORDER_RE)


class TaskUpdate(_Strict):
    """The update body: any subset of the create fields; an input carries exactly one data item."""

    name: str | None = Field(None, pattern=NAME_RE)
    description: str | None = Field(None, max_length=500)
    schedule: TaskSchedule | None = None
    input: TaskInput | None = None
    output: TaskOutput | None = None
    config: TaskServiceConfig | None = None
    service_version: str | None = Field(None, pattern=SERVICE_VERSION_RE)
    is_saved_as_template: StrictBool | None = None
    resource_order_id: str | None = Field(None, pattern=RESOURCE_ORDER_RE)

    @model_validator(mode="after")
    def _one_input(self) -> TaskUpdate:
        if self.input is not None and len(self.input.data) != 1:
            raise _FieldError("input.data", "an update carries exactly one input")
        return self


class TaskState(str, Enum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    ABNORMAL = "ABNORMAL"
    START_FAILED = "START_FAILED"
    SUCCEEDED = "SUCCEEDED"  # every input was a file and all of them played to their end
    FAILED = "FAILED"


class _FieldError(ValueError):
    """A cross-field rule that knows the exact path it is about."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-after[", "function-before[", "function-wrap[")):
            continue
        elif part in {"bool", "literal[0,1]", "int", "str"}:
            continue  # union member tags added by pydantic; not part of the user's path
        else:
            path += ("." if path else "") + part
    return path


def _to_api_error(exc: ValidationError) -> ApiError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    ctx = first.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, _FieldError):
        prefix = _loc_to_path(first["loc"])
        path = cause.path if not prefix or cause.path.startswith(prefix) else f"{prefix}.{cause.path}"
        return invalid(path, cause.reason)
    path = _loc_to_path(first["loc"]) or "body"
    kind = first["type"]
    if kind == "extra_forbidden":
        return invalid(path, "unknown field", "Remove the field or fix its spelling; see docs/api.md.")
    if kind == "missing":
        return invalid(path, "is mandatory")
    message = str(first["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return invalid(path, message)


def _edge_rules(spec: TaskSpec | TaskUpdate) -> None:
    """Documented but cloud-only features: valid bodies the edge cannot honour, said clearly."""
    if spec.schedule is not None and spec.schedule.days_of_month is not None:
        raise unsupported("schedule.days_of_month", "monthly schedules are not supported",
                          "Use a weekly schedule with days_of_week and periods.")


def _validate(model: type[TaskSpec] | type[TaskUpdate], body: Any) -> TaskSpec | TaskUpdate:
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    try:
        spec = model.model_validate(body)
    except ValidationError as exc:
        raise _to_api_error(exc) from None
    _edge_rules(spec)
    return spec


def parse_create(body: Any) -> TaskSpec:
    spec = _validate(TaskSpec, body)
    assert isinstance(spec, TaskSpec)
    return spec


def parse_update(body: Any) -> TaskUpdate:
    update = _validate(TaskUpdate, body)
    assert isinstance(update, TaskUpdate)
    return update


def apply_update(spec: TaskSpec, update: TaskUpdate) -> TaskSpec:
    """The spec after ``update``; validated again as a whole, so cross-field rules still hold."""
    merged = spec.model_dump(mode="json", exclude_none=True)
    merged.update(update.model_dump(mode="json", exclude_unset=True))
    return parse_create(merged)


def check_task_id(task_id: str) -> None:
    if not TASK_ID_RE.match(task_id):
        raise ApiError(ErrorCode.NO_SUCH_TASK, "no task with that id", ["task_id"],
                       "task ids are 32 lowercase hexadecimal characters", "Check the task id.")


def masked_spec(spec: TaskSpec) -> dict[str, Any]:
    """The spec as JSON with every secret value replaced (VCN password, header values, URL credentials)."""
    from agent.redact import MASK, mask_url

    body = spec.model_dump(mode="json", exclude_none=True)
    inputs = body.get("input", {})
    if "vcn" in inputs:
        inputs["vcn"]["password"] = MASK
    for item in inputs.get("data", []):
        if "headers" in item:
            item["headers"] = dict.fromkeys(item["headers"], MASK)
        if "url" in item:
            item["url"] = mask_url(item["url"])
    webhook = body.get("output", {}).get("webhook")
    if webhook is not None:
        webhook["headers"] = dict.fromkeys(webhook["headers"], MASK)
        webhook["url"] = mask_url(webhook["url"])
    return body


def spec_secrets(spec: TaskSpec) -> list[str]:
    """Every secret value in a spec, for the log masker: the VCN password, input and webhook header values,
    and the passwords inside input and webhook URLs (as written and URL-decoded)."""
    from agent.redact import url_secrets

    values: list[str] = []
    if spec.input.vcn is not None:
        values.append(spec.input.vcn.password)
    for item in spec.input.data:
        values.extend((item.headers or {}).values())
        if item.url:
            values.extend(url_secrets(item.url))
    if spec.output.webhook is not None:
        values.extend(spec.output.webhook.headers.values())
        values.extend(url_secrets(spec.output.webhook.url))
    return values
