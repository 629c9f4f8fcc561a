"""The one S3 client factory from ``ObsSettings`` (OBS or any S3-compatible store), and what its errors mean.

minio rather than boto3: about three times cheaper per request (1,200 vs 425 sequential 1 KiB PUTs a second
against the same local server on this box, docs/benchmarks.md), and far fewer dependencies on a small box.
Its own retries are turned off: the outbox paces retries (``backoff.DELIVERY_RETRY``) and a stream its
reconnects, so a request here fails fast and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from minio import Minio

from agent.redact import mask_text
from agent.settings import ObsSettings

POOL_SIZE = 16  # connections per host: one per delivery worker, the input checks and diag
# 4xx codes that a later attempt can pass without anyone changing the request or the store
_HEALING_CODES = frozenset({"RequestTimeout", "RequestTimeTooSkewed", "SlowDown", "OperationAborted",
                            "InternalError", "ServiceUnavailable"})


@dataclass(frozen=True)
class StoreFailure:
    """Why a request to the store failed: ``permanent`` when retrying the same request cannot help."""

    reason: str
    permanent: bool


def new_client(settings: ObsSettings) -> Minio:
    """A thread-safe client on its own keep-alive pool; raises OSError when the secret key file is unreadable."""
    # minio, urllib3 and certifi are imported by the first use: ~19 MiB that an agent without [obs] never needs
    import certifi
    import urllib3
    from minio import Minio

    parts = urlsplit(settings.endpoint)
    timeout = urllib3.Timeout(connect=settings.timeout_s, read=settings.timeout_s)
    verify = settings.verify_tls or settings.ca_file is not None
    pool = urllib3.PoolManager(
        timeout=timeout, maxsize=POOL_SIZE, retries=False,
        cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        ca_certs=str(settings.ca_file) if settings.ca_file is not None else certifi.where(),
    )
    client = Minio(parts.netloc, access_key=settings.access_key, secret_key=settings.resolved_secret_key(),
                   secure=parts.scheme == "https", region=settings.region, http_client=pool,
                   cert_check=verify)
    if settings.addressing == "virtual":
        client.enable_virtual_style_endpoint()  # type: ignore[no-untyped-call]
    else:
        client.disable_virtual_style_endpoint()  # type: ignore[no-untyped-call]
    return client


def failure(exc: BaseException) -> StoreFailure:
    """What a client error means for a retry: 5xx, timeouts and network errors heal; other 4xx do not."""
    from minio.error import InvalidResponseError, S3Error, ServerError

    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else 0
        permanent = 400 <= status < 500 and status not in (408, 429) and exc.code not in _HEALING_CODES
        return StoreFailure(mask_text(f"{exc.code} (HTTP {status}): {exc.message}"), permanent)
    if isinstance(exc, ServerError):
        return StoreFailure(f"HTTP {exc.status_code} from the store", exc.status_code < 500 and
                            exc.status_code not in (408, 429))
    if isinstance(exc, InvalidResponseError):
        # a proxy's HTML error page or a server that is not S3: the status still says whether it may heal
        text = str(exc)
        found = _status_in(text)
        return StoreFailure(mask_text(f"not an S3 answer (HTTP {found or '?'})"),
                            found is not None and 400 <= found < 500 and found not in (408, 429))
    # minio refuses bad arguments (a bucket or key it cannot send) with ValueError: that will not heal;
    # anything else (network, TLS, timeouts) may
    return StoreFailure(mask_text(f"{type(exc).__name__}: {exc}")[:300], isinstance(exc, ValueError | TypeError))


def _status_in(text: str) -> int | None:
    marker = "Response code: "
    start = text.find(marker)
    if start < 0:
        return None
    digits = text[start + len(marker):start + len(marker) + 3]
    return int(digits) if digits.isdigit() else None
