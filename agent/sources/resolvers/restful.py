"""``restful`` inputs: ask an HTTP lookup service for the stream URL and pick it out of the JSON reply."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx

from agent.redact import mask_url
from agent.sources.resolvers.base import InputRef, InputResolver, ResolveError, check_remote_url
from agent.sources.resolvers.http_deadline import DeadlineTransport
from agent.sources.target import StreamTarget
from agent.tasks.errors import invalid

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 1 << 20
MAX_REDIRECTS = 3


class PathError(LookupError):
    """``rtsp_path_in_response`` does not lead to a value; the message says where it stopped."""


def split_path(path: str) -> list[str]:
    """``"/data/streams/0/url"`` → ``["data", "streams", "0", "url"]`` (empty segments carry nothing)."""
    return [segment for segment in path.split("/") if segment]


def walk(document: Any, path: str) -> Any:
    """The value at ``path`` in a parsed JSON document; a digits-only segment indexes a list."""
    segments = split_path(path)
    if not segments:
        raise PathError("the path is empty")
    node = document
    for depth, segment in enumerate(segments):
        where = "/".join(segments[:depth]) or "the top level"
        if isinstance(node, dict):
            if segment not in node:
                raise PathError(f"no key {segment!r} at {where}")
            node = node[segment]
        elif isinstance(node, list):
            if not (segment.isascii() and segment.isdigit()):  # "²" is a digit to str.isdigit, not to int()
                raise PathError(f"{where} is a list; {segment!r} is not an index")
            position = int(segment)
            if position >= len(node):
                raise PathError(f"index {position} is out of range at {where} (a list of {len(node)})")
            node = node[position]
        else:
            raise PathError(f"{where} is a {_json_kind(node)}, not an object or list")
    return node


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


class RestfulResolver(InputResolver):
    kind = "restful"

    def __init__(self, *, timeout_s: float = TIMEOUT_S, max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes

    def check(self, ref: InputRef) -> None:
        url = ref.data.url or ""
        if not url.lower().startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
            raise invalid(f"{ref.field}.url", "a restful lookup URL must be http:// or https://")
        if not split_path(ref.data.rtsp_path_in_response or ""):
            raise invalid(f"{ref.field}.rtsp_path_in_response", "names no key (use e.g. data/streams/0/url)")

    def resolve(self, ref: InputRef) -> StreamTarget:
        url = ref.data.url or ""
        document = self._fetch(url, ref.data.headers or {}, verify=ref.data.certificate_check)
        path = ref.data.rtsp_path_in_response or ""
        try:
            leaf = walk(document, path)
        except PathError as exc:
            raise ResolveError(f"restful lookup {mask_url(url)}: rtsp_path_in_response {path!r}: {exc}") from None
        stream_url = check_remote_url(leaf, f"restful lookup {mask_url(url)}: the value at {path!r}")
        log.info("restful input %d of task %s resolved to %s", ref.index, ref.task_id, mask_url(stream_url))
        return StreamTarget(url=stream_url)

    def _fetch(self, url: str, headers: dict[str, str], *, verify: bool) -> Any:
        where = f"restful lookup {mask_url(url)}"
        # one deadline from connect to the last byte, redirects included (see http_deadline)
        transport = DeadlineTransport(time.monotonic() + self._timeout_s, verify=verify)
        try:
            with httpx.Client(transport=transport, timeout=self._timeout_s, follow_redirects=True,
                              max_redirects=MAX_REDIRECTS) as client, \
                    client.stream("GET", url, headers=headers) as response:
                if not response.is_success:
                    raise ResolveError(f"{where} answered HTTP {response.status_code}",
                                       retryable=response.status_code >= 500 or response.status_code in (408, 429))
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise ResolveError(f"{where}: the reply ({declared} bytes) is larger than "
                                       f"{self._max_bytes} bytes", retryable=False)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise ResolveError(f"{where}: the reply is larger than {self._max_bytes} bytes",
                                           retryable=False)
        except httpx.TooManyRedirects:
            raise ResolveError(f"{where}: more than {MAX_REDIRECTS} redirects", retryable=False) from None
        except httpx.TimeoutException:
            raise ResolveError(f"{where}: no complete reply within {self._timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise ResolveError(f"{where}: {type(exc).__name__}: {exc}") from None
        try:
            return json.loads(bytes(body))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ResolveError(f"{where}: the reply is not JSON ({exc.__class__.__name__})") from None
