"""``url`` inputs: network streams as given, local files only from the configured media roots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agent.redact import mask_url
from agent.sources.resolvers.base import REMOTE_SCHEMES, InputRef, InputResolver, ResolveError
from agent.sources.target import StreamTarget
from agent.tasks.errors import invalid

# HTTP URLs with these endings are finite files (play to the end), not live streams such as HLS.
FILE_SUFFIXES = frozenset({".mp4", ".mkv", ".avi", ".mov", ".flv", ".ts", ".webm", ".h264", ".h265", ".m4v"})
MEDIA_ROOTS_ADVICE = "Put the file under one of the agent's media_roots (agent.toml) and name it by absolute path."


class LocalFileError(ValueError):
    """A local path that may not be played; the message says why."""


def local_path(url: str) -> str | None:
    """The file system path a url input names (``file://`` URL or bare path), or None for a network URL."""
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise LocalFileError("file:// URLs must name a local file (file:///path)")
        return unquote(parts.path)
    if url.startswith(("/", ".")) or "://" not in url:
        return url
    return None


def contained_file(path: str, media_roots: Sequence[Path], *, setting: str = "media_roots") -> Path:
    """The real path of ``path`` if it is an existing file inside a media root; else LocalFileError.

    Symlinks and ``..`` are resolved first, so neither can lead out of a root. ``setting`` names the
    roots in messages (model files obey the same rules under ``models_roots``).
    """
    if not media_roots:
        raise LocalFileError(f"local files are disabled: the agent has no {setting}")
    if not os.path.isabs(path):
        raise LocalFileError("a local file must be named by its absolute path")
    real = Path(os.path.realpath(path))
    for root in media_roots:
        real_root = Path(os.path.realpath(root))
        if real == real_root or real_root in real.parents:
            if not real.is_file():
                raise LocalFileError(f"no such file under the {setting}")
            return real
    raise LocalFileError(f"the file is outside the agent's {setting}")


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.lower()


class UrlResolver(InputResolver):
    kind = "url"

    def __init__(self, media_roots: Sequence[Path]) -> None:
        self._media_roots = list(media_roots)

    def check(self, ref: InputRef) -> None:
        self.check_url(ref.data.url or "", f"{ref.field}.url")

    def check_url(self, url: str, field: str) -> None:
        """Raises ApiError naming ``field`` when ``url`` can never be played."""
        try:
            path = local_path(url)
            if path is not None:
                contained_file(path, self._media_roots)
                return
        except LocalFileError as exc:
            raise invalid(field, str(exc), MEDIA_ROOTS_ADVICE) from None
        try:
            parts = urlsplit(url)
        except ValueError:
            raise invalid(field, "is not a valid URL") from None
        if parts.scheme.lower() not in REMOTE_SCHEMES:
            raise invalid(field, f"unsupported scheme {parts.scheme!r}",
                          "Use rtsp, rtsps, rtmp, rtmps, http(s) or a local file under media_roots.")
        if not parts.hostname:
            raise invalid(field, "the URL names no host")

    def resolve(self, ref: InputRef) -> StreamTarget:
        return self.target(ref.data.url or "")

    def target(self, url: str) -> StreamTarget:
        try:
            path = local_path(url)
            if path is not None:
                real = contained_file(path, self._media_roots)
                return StreamTarget(url=str(real), is_file=True)
        except LocalFileError as exc:
            raise ResolveError(f"{mask_url(url)}: {exc}", retryable=False) from None
        scheme = scheme_of(url)
        if scheme not in REMOTE_SCHEMES:
            raise ResolveError(f"{mask_url(url)}: unsupported scheme {scheme!r}", retryable=False)
        is_file = scheme in ("http", "https") and Path(urlsplit(url).path).suffix.lower() in FILE_SUFFIXES
        return StreamTarget(url=url, is_file=is_file)

