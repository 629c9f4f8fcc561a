"""ResolverSet: the one door the task service and the pipelines use to turn task inputs into streams."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.redact import mask_text
from agent.settings import AgentSettings
from agent.sources.resolvers.base import InputRef, InputResolver, OnChange, ResolveError
from agent.sources.resolvers.edgecamera import LOOKUP_TIMEOUT_S, EdgeCameraResolver
from agent.sources.resolvers.obs import ObsResolver
from agent.sources.resolvers.restful import TIMEOUT_S as RESTFUL_TIMEOUT_S
from agent.sources.resolvers.restful import RestfulResolver
from agent.sources.resolvers.twin import DeviceTwinClient
from agent.sources.resolvers.url import UrlResolver
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
