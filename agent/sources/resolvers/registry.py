"""ResolverSet: the one door the task service and the pipelines use to turn task inputs into streams."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from agent.redact import mask_text, mask_url
from agent.settings import AgentSettings
from agent.sources.resolvers.base import InputRef, InputResolver, OnChange, ResolveError
from agent.sources.resolvers.edgecamera import LOOKUP_TIMEOUT_S, EdgeCameraResolver
from agent.sources.resolvers.obs import ObsResolver
from agent.sources.resolvers.restful import TIMEOUT_S as RESTFUL_TIMEOUT_S
from agent.sources.resolvers.restful import RestfulResolver
from agent.sources.resolvers.twin import DeviceTwinClient
from agent.sources.resolvers.url import FILE_SUFFIXES, LocalFileError, UrlResolver, local_path
from agent.sources.resolvers.vcn import KEEPALIVE_S, VcnResolver, tls_verify
from agent.sources.resolvers.video_source import VideoSourceResolver
from agent.sources.target import StreamTarget
from agent.tasks.errors import unsupported
from agent.tasks.model import TaskSpec

log = logging.getLogger(__name__)


def source_id_of(ref_kind: str, spec: TaskSpec, index: int) -> str:
    """What results name as stream_id: the camera or source id, else the stream name, else input-{index}."""
    data = spec.input.data[index]
    by_kind = {"edgecamera": data.id, "vcn": data.device_id, "video_source": data.video_source_id}
    return by_kind.get(ref_kind) or data.stream_name or f"input-{index}"


# The port a URL means when it names none: ``rtsp://cam/x`` and ``rtsp://cam:554/x`` are one camera.
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}


@dataclass(frozen=True)
class SourceKey:
    """Which camera an input names: inputs with equal keys share one connection and one decoder.

    ``identity`` holds everything that makes two inputs the same source, credentials included (two
    tasks that log in differently are never merged, so neither sees frames through the other's
    login); it is compared, never shown. ``label`` is what status and /metrics show: masked.
    ``shared`` is False for files: each task plays its file from the start to the end.
    """

    identity: tuple[object, ...] = field(repr=False)
    label: str = field(compare=False)
    shared: bool = True


def source_key(spec: TaskSpec, index: int) -> SourceKey:
    """The source input ``index`` of ``spec`` names; a pure function of the spec (no lookup, no I/O).

    What only labels an input (``stream_name``, ``index``) is left out; what changes what is fetched or
    whether it may be fetched (credentials, lookup headers, certificate checks) is in. Inputs the key
    cannot see through are not merged: a ``video_source`` entry and a ``url`` input naming the same
    camera are two sources (the registry entry is the agent's config, not the task's).
    """
    kind = spec.input.type
    data = spec.input.data[index]
    if kind == "video_source":
        return SourceKey(("video_source", data.video_source_id), f"video_source:{data.video_source_id}")
    if kind == "edgecamera":
        return SourceKey(("edgecamera", data.id), f"edgecamera:{data.id}")
    if kind == "vcn" and spec.input.vcn is not None:
        vcn = spec.input.vcn
        host = vcn.ip.lower()
        return SourceKey(("vcn", host, vcn.port, vcn.username, vcn.password, data.device_id, data.stream_type),
                         f"vcn:{host}:{vcn.port}/{data.device_id}/{data.stream_type}")
    if kind == "restful":
        lookup = _normal_url(data.url or "")
        headers = tuple(sorted((name.lower(), value) for name, value in (data.headers or {}).items()))
        return SourceKey(("restful", lookup, data.rtsp_path_in_response, headers, data.certificate_check),
                         f"restful:{mask_url(data.url or '')}#{data.rtsp_path_in_response}")
    if kind == "url":
        return _url_key(data.url or "")
    # obs inputs are refused on the edge; whatever names them is its own source
    return SourceKey((kind, data.bucket, data.path, index), f"{kind}:input-{index}", shared=False)


def _url_key(url: str) -> SourceKey:
    try:
        path = local_path(url)
    except LocalFileError:
        path = None
    if path is not None:
        return SourceKey(("file", posixpath.normpath(path)), f"file:{Path(path).name}", shared=False)
    normal = _normal_url(url)
    is_file = normal[0] in ("http", "https") and Path(str(normal[4])).suffix.lower() in FILE_SUFFIXES
    return SourceKey(("file" if is_file else "url", *normal), mask_url(url), shared=not is_file)


def _normal_url(url: str) -> tuple[object, ...]:
    """(scheme, user, password, host, path, query, port) of ``url``, spelled one way.

    Scheme and host are case-insensitive, a missing port is the scheme's default, an empty path is
    ``/``, dot segments are resolved and percent-escapes are decoded where they are optional; the
    credentials are compared decoded. A URL that does not parse is its own spelling.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ("unparsed", url)
    scheme = parts.scheme.lower()
    path = unquote(parts.path) or "/"
    if path != "/":
        trailing = path.endswith("/")
        path = posixpath.normpath("/" + path.lstrip("/")) + ("/" if trailing else "")
        path = path.replace("//", "/")
    return (scheme, unquote(parts.username or ""), unquote(parts.password or ""), (parts.hostname or "").lower(),
            quote(path, safe="/:@!$&'()*+,;=~"), parts.query, port if port is not None else DEFAULT_PORTS.get(scheme))


class ResolverSet:
    """Every input resolver of the agent, built once from the settings; ``close`` releases them all."""

    def __init__(self, settings: AgentSettings, *, lookup_timeout_s: float = LOOKUP_TIMEOUT_S,
                 restful_timeout_s: float = RESTFUL_TIMEOUT_S, vcn_keepalive_s: float = KEEPALIVE_S) -> None:
        twin = DeviceTwinClient(settings.mqtt, settings.node_id) if settings.mqtt is not None else None
        url = UrlResolver(settings.media_roots)
        resolvers: dict[str, InputResolver] = {
            "url": url,
            "restful": RestfulResolver(timeout_s=restful_timeout_s),
            "vcn": VcnResolver(verify=tls_verify(settings.vcn.verify_tls, settings.vcn.ca_file),
                               keepalive_s=vcn_keepalive_s),
            "edgecamera": EdgeCameraResolver(settings.node_id, settings.cameras, twin,
                                             timeout_s=lookup_timeout_s),
            "obs": ObsResolver(settings.obs, settings.state_dir / "cache" / "obs"),
        }
        resolvers["video_source"] = VideoSourceResolver(settings.video_sources, dict(resolvers))
        self._resolvers = resolvers

    def check(self, spec: TaskSpec) -> None:
        """Create-time checks; raises ApiError naming the field. Only obs inputs ask the network (the store)."""
        kind = spec.input.type
        resolver = self._resolvers.get(kind)
        if resolver is None:
            raise unsupported("input.type", f"{kind} inputs are not supported on the edge",
                              "Use url, obs, edgecamera, vcn, restful or video_source inputs.")
        for index in range(len(spec.input.data)):
            resolver.check(self._ref(spec, "", index))

    def resolver_for(self, spec: TaskSpec, task_id: str, index: int) -> Callable[[], StreamTarget]:
        """The callable the stream calls on every (re)connect; it raises ResolveError (masked message).

        Asking for it means a stream of this input is being built, so a refusal remembered from an earlier
        run (a refused VCN login) is forgotten: each start of a task may try once.
        """
        ref = self._ref(spec, task_id, index)
        resolver = self._resolvers.get(ref.kind)
        if resolver is not None:
            resolver.begin(ref)

        def resolve() -> StreamTarget:
            if resolver is None:
                raise ResolveError(f"{ref.kind} inputs are not supported on the edge", retryable=False)
            try:
                return resolver.resolve(ref)
            except ResolveError as exc:
                log.warning("task %s input %d: %s", task_id, index, exc)
                raise
            except Exception as exc:  # a resolver bug must surface as this input's error, not kill the stream
                log.error("task %s input %d: resolver failed: %s", task_id, index, mask_text(repr(exc)))
                raise ResolveError(f"{ref.kind} resolver failed: {type(exc).__name__}: {exc}") from None

        return resolve

    def watch(self, spec: TaskSpec, task_id: str, index: int, on_change: Callable[[str], None]) -> Callable[
            [], None]:
        """Call ``on_change(reason)`` when the input's URL changes (edgecamera); returns the unsubscribe."""
        ref = self._ref(spec, task_id, index)
        resolver = self._resolvers.get(ref.kind)
        if resolver is None:
            return lambda: None

        def guarded(reason: str) -> None:
            try:
                on_change(mask_text(reason))
            except Exception as exc:  # runs on the MQTT network thread, which must survive
                log.error("task %s input %d: change handler failed: %s", task_id, index, mask_text(repr(exc)))

        handler: OnChange = guarded
        return resolver.watch(ref, handler)

    def close(self) -> None:
        """Log out of VCN platforms, stop keep-alive threads, disconnect from the broker."""
        for kind, resolver in self._resolvers.items():
            try:
                resolver.close()
            except Exception as exc:  # closing one must not keep the others open
                log.error("closing the %s resolver failed: %s", kind, mask_text(repr(exc)))

    @staticmethod
    def _ref(spec: TaskSpec, task_id: str, index: int) -> InputRef:
        if not 0 <= index < len(spec.input.data):
            raise IndexError(f"input index {index} out of range (the task has {len(spec.input.data)} inputs)")
        return InputRef(kind=spec.input.type, data=spec.input.data[index], vcn=spec.input.vcn, index=index,
                        field=f"input.data[{index}]", task_id=task_id)
