"""Masking of secrets in anything a person or another system may read (logs, state, errors, diag)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

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


def url_secrets(url: str) -> list[str]:
    """The password inside a URL, as written and URL-decoded (either may reach a log); none when the
    URL has no password or cannot be parsed (a malformed URL is masked by pattern instead)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    return list(dict.fromkeys((password, unquote(password))))


class SecretRegistry:
    """Known secret values (passwords, header values, tokens) to mask wherever they appear in text.

    Values are held per owner (``"task:{id}"``, ``"config:mqtt.password"``…): registering an owner again
    replaces its values and ``forget`` drops them, so the registry holds only what exists now and its
    size is bounded by the task limits. A value shared by two owners stays until both are gone.
    """

    _MIN_LEN = 3  # masking "a" would mangle every line; such values are not secrets worth the name

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[str, frozenset[str]] = {}
        self._values: tuple[str, ...] = ()

    def register(self, owner: str, values: Iterable[str | None]) -> None:
        kept = frozenset(v for v in values if v and len(v) >= self._MIN_LEN)
        with self._lock:
            if self._by_owner.get(owner, frozenset()) == kept:
                return
            if kept:
                self._by_owner[owner] = kept
            else:
                self._by_owner.pop(owner, None)
            self._values = self._ordered()

    def forget(self, owner: str) -> None:
        with self._lock:
            if self._by_owner.pop(owner, None) is not None:
                self._values = self._ordered()

    def __len__(self) -> int:
        """Distinct values held."""
        with self._lock:
            return len(frozenset().union(*self._by_owner.values()))

    def values(self) -> tuple[str, ...]:
        """Every value held, longest first (so a secret that contains another is masked whole)."""
        with self._lock:
            return self._values

    def _ordered(self) -> tuple[str, ...]:
        # Not one compiled regular expression: ``re`` caches every pattern it compiles (up to 512), so
        # the values of forgotten owners would stay in memory, and compiling costs ~2 µs per byte under
        # this lock (a 1 MiB request body of header values would stall every log line for seconds).
        # Plain substring search costs about as much per line at the ~1,100 values the limits allow.
        return tuple(sorted(frozenset().union(*self._by_owner.values()), key=len, reverse=True))


secrets = SecretRegistry()


def mask_text(text: str) -> str:
    """Mask URL credentials, secret query parameters and every registered secret value in ``text``."""
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _SECRET_QUERY.sub(lambda m: m.group("key") + MASK, text)
    for value in secrets.values():
        if value in text:
            text = text.replace(value, MASK)
    return text
