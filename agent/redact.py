"""Masking of secrets in anything a person or another system may read (logs, state, errors, diag)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# scheme://user:pass@host or scheme://user@host — anything between // and the last @ of the authority.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")
# query parameters that commonly carry credentials in stream lookups and webhooks
_SECRET_QUERY = re.compile(
    r"(?i)(?P<key>[?&;](?:password|passwd|pwd|token|access_token|auth|key|secret|signature|sig)=)(?P<value>[^&\s#]+)"
)


def mask_url(url: str) -> str:
    """``rtsp://admin:pw@h/x?token=t`` → ``rtsp://***@h/x?token=***``; non-URLs pass through masked text."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text(url)
    if parts.username is None and parts.password is None:
        return _SECRET_QUERY.sub(lambda m: m.group("key") + MASK, url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{MASK}@{host}" + (f":{port}" if port is not None else "")
    rebuilt = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return _SECRET_QUERY.sub(lambda m: m.group("key") + MASK, rebuilt)


class SecretRegistry:
    """Known secret values (passwords, header values, tokens) to mask wherever they appear in text."""

    _MIN_LEN = 3  # masking "a" would mangle every line; such values are not secrets worth the name

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()

    def add(self, *values: str | None) -> None:
        with self._lock:
            for value in values:
                if value and len(value) >= self._MIN_LEN:
                    self._values.add(value)

    def add_all(self, values: Iterable[str | None]) -> None:
        self.add(*values)

    def snapshot(self) -> list[str]:
        with self._lock:
            return sorted(self._values, key=len, reverse=True)


secrets = SecretRegistry()


def mask_text(text: str) -> str:
    """Mask URL credentials, secret query parameters and every registered secret value in ``text``."""
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _SECRET_QUERY.sub(lambda m: m.group("key") + MASK, text)
    for value in secrets.snapshot():
        if value in text:
            text = text.replace(value, MASK)
    return text
