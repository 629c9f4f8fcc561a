"""Which source a task input names: inputs with equal keys share one connection and one decoder.

A pure function of the spec (no lookup, no I/O), in a module of its own so that a data-plane worker
process can key its streams without importing every resolver (and their clients) it never runs.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from agent.redact import mask_url
from agent.sources.probe import DEFAULT_PORTS
from agent.sources.resolvers.url import FILE_SUFFIXES, LocalFileError, local_path
from agent.tasks.model import TaskSpec


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
    # obs: the object is downloaded and played as a file, from its start, for each task
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
