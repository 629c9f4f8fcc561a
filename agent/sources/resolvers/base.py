"""The one interface every input resolver implements, and the error a failed lookup raises.

A resolver turns one task input into a playable :class:`StreamTarget`. The stream calls it again on
every (re)connect because lookups (VCN, RESTful services, the device twin) hand out URLs that expire
or change; ``check`` runs when a task is created, and only the obs resolver asks the network there (does
the object exist and may it be read).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from agent.redact import mask_text
from agent.sources.target import StreamTarget
from agent.tasks.model import TaskInputData, TaskInputVcn

# Schemes a stream may be opened with when the URL comes from someone else (a lookup service, a
# device twin, a VCN platform): never file://, so a remote answer cannot make the agent read local files.
REMOTE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https"})


class ResolveError(Exception):
    """A lookup that failed. The message is already masked; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(mask_text(message))
        self.retryable = retryable

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class InputRef:
    """One input of one task, as a resolver sees it.

    ``field`` is where errors point (``input.data[2]``, or the agent config entry a video source
    came from). What results name as ``stream_id`` is ``registry.source_id_of``'s business.
    """

    kind: str
    data: TaskInputData
    vcn: TaskInputVcn | None
    index: int
    field: str
    task_id: str = ""


OnChange = Callable[[str], None]
Unsubscribe = Callable[[], None]


def no_unsubscribe() -> None:
    """The unsubscribe of inputs that have nothing to watch."""


class InputResolver(ABC):
    """Resolves the inputs of one input type."""

    kind: ClassVar[str]

    def check(self, ref: InputRef) -> None:  # noqa: B027 - most kinds have no static check beyond the model's
        """Checks at create time; raises ``ApiError`` naming the field. No network I/O, except that an obs
        input asks its store whether the object exists and may be read."""

    @abstractmethod
    def resolve(self, ref: InputRef) -> StreamTarget:
        """A playable target for ``ref``; raises :class:`ResolveError` with a masked message."""

    def begin(self, ref: InputRef) -> None:  # noqa: B027 - only resolvers that remember refusals act on it
        """A stream of ``ref`` is being built (its task starts, restarts or was updated): forget what earlier
        runs concluded for good (a refused login), so this run may try once more."""

    def watch(self, ref: InputRef, on_change: OnChange) -> Unsubscribe:
        """Call ``on_change(reason)`` when the input's URL changes; returns the unsubscribe function."""
        return no_unsubscribe

    def close(self) -> None:  # noqa: B027 - stateless resolvers have nothing to release
        """Release sessions, threads and connections."""


def check_remote_url(url: object, what: str) -> str:
    """``url`` if it is a non-empty stream URL a remote party may hand us; else a ResolveError saying ``what``.

    Retryable: the remote party may answer better next time (a camera coming online, a fixed record).
    """
    if not isinstance(url, str) or not url.strip():
        raise ResolveError(f"{what} is not a non-empty string")
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ResolveError(f"{what} is not a valid URL") from None
    if parts.scheme.lower() not in REMOTE_SCHEMES or not parts.netloc:
        raise ResolveError(
            f"{what} must be an {'/'.join(sorted(REMOTE_SCHEMES))} URL with a host, not {mask_text(url)!r}"
        )
    return url
