"""``video_source`` inputs: an id in the agent's ``video_sources`` registry, the edge analogue of the
video sources VIAS manages in the cloud. An entry maps to a URL or to another input kind, which the
resolver of that kind then handles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from pydantic import ValidationError

from agent.settings import VideoSource
from agent.sources.resolvers.base import (
    InputRef,
    InputResolver,
    OnChange,
    ResolveError,
    Unsubscribe,
)
from agent.sources.target import StreamTarget
from agent.tasks.errors import ApiError, invalid
from agent.tasks.model import TaskInput, TaskInputData

REGISTRY_ADVICE = "Define the id under [[video_sources]] in agent.toml (see docs/inputs.md)."


class VideoSourceResolver(InputResolver):
    kind = "video_source"

    def __init__(self, video_sources: Sequence[VideoSource], resolvers: Mapping[str, InputResolver]) -> None:
        self._sources = {source.id: source for source in video_sources}
        self._resolvers = resolvers

    def expand(self, ref: InputRef) -> InputRef:
        """The input the registry entry stands for."""
        source_id = ref.data.video_source_id or ""
        source = self._sources.get(source_id)
        if source is None:
            raise invalid(f"{ref.field}.video_source_id", f"no video source {source_id!r} in the agent config",
                          REGISTRY_ADVICE)
        try:
            target = self._target_of(source)
        except ValueError as exc:
            raise invalid(f"{ref.field}.video_source_id", f"video source {source_id!r} is misconfigured: {exc}",
                          "Fix the entry under [[video_sources]] in agent.toml.") from None
        return replace(target, index=ref.index, task_id=ref.task_id)

    def _target_of(self, source: VideoSource) -> InputRef:
        where = f"video_sources[{source.id}]"
        if source.url is not None:
            return InputRef(kind="url", data=TaskInputData(url=source.url), vcn=None, index=0, field=where)
        body = dict(source.input or {})
        data = body.get("data")
        body["data"] = [data] if isinstance(data, dict) else data
        try:
            parsed = TaskInput.model_validate(body)
        except ValidationError as exc:
            raise ValueError(_describe(exc)) from None
        if parsed.type not in self._resolvers or parsed.type == self.kind:
            raise ValueError(f"input.type {parsed.type!r} cannot back a video source")
        return InputRef(kind=parsed.type, data=parsed.data[0], vcn=parsed.vcn, index=0,
                        field=f"{where}.input.data")

    def check(self, ref: InputRef) -> None:
        target = self.expand(ref)
        try:
            self._resolvers[target.kind].check(target)
        except ApiError as exc:
            raise invalid(f"{ref.field}.video_source_id", f"video source {ref.data.video_source_id!r}: "
                          f"{exc.detail}", exc.advice) from None

    def resolve(self, ref: InputRef) -> StreamTarget:
        try:
            target = self.expand(ref)
        except ApiError as exc:
            raise ResolveError(exc.detail, retryable=False) from None
        return self._resolvers[target.kind].resolve(target)

    def begin(self, ref: InputRef) -> None:
        try:
            target = self.expand(ref)
        except ApiError:
            return
        self._resolvers[target.kind].begin(target)

    def watch(self, ref: InputRef, on_change: OnChange) -> Unsubscribe:
        try:
            target = self.expand(ref)
        except ApiError:
            return super().watch(ref, on_change)
        return self._resolvers[target.kind].watch(target, on_change)


def _describe(exc: ValidationError) -> str:
    """The first problem of an entry's ``input`` as ``input.<field>: <reason>``."""
    first = exc.errors(include_url=False, include_input=False)[0]
    cause = (first.get("ctx") or {}).get("error")
    path = getattr(cause, "path", None)  # the task model's cross-field errors know their own path
    if isinstance(path, str):
        return f"{path.replace('input.data[0]', 'input.data')}: {getattr(cause, 'reason', cause)}"
    loc = ".".join(str(part) for part in first["loc"] if part != 0)
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"input.{loc}: {message}" if loc else message
