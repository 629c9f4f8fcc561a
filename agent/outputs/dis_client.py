"""Huawei DIS over its documented REST API (PutRecords, DescribeStream), signed with AK/SK (SDK-HMAC-SHA256).

Not the ``huaweicloudsdkdis`` SDK: for one signed POST it brings requests, pymongo, pyyaml, simplejson and
six onto the box and its own HTTP session with its own retry and timeout rules, next to the httpx transport
the webhook sink already keeps alive; and the outbox needs the raw answer (status, per-record errors), which
the SDK turns into exceptions of its own. The signature is Huawei's documented APIG algorithm, a few lines;
the tests check it against the SDK's own ``Signer`` (tests/fixtures/dis.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import httpx

from agent.outputs.webhook import Outcome, classify
from agent.redact import mask_text
from agent.settings import DisSettings

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# PutRecords limits of the service: records per request, bytes per request, bytes per record
MAX_RECORDS = 500
MAX_REQUEST_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
RECORD_OVERHEAD = 96  # JSON around one record's base64 data and partition key, counted against the request cap


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes, access_key: str, secret_key: str,
         now: datetime) -> dict[str, str]:
    """``headers`` plus X-Sdk-Date, Host and the Authorization of Huawei's SDK-HMAC-SHA256 signature."""
    parts = urlsplit(url)
    signed = {name.lower(): value.strip() for name, value in headers.items() if "_" not in name}
    signed["x-sdk-date"] = now.strftime(DATE_FORMAT)
    signed.setdefault("host", parts.netloc)
    names = sorted(signed)
    path = "/".join(quote(segment, safe="~") for segment in parts.path.split("/"))
    if not path.endswith("/"):
        path += "/"
    query = "&".join(sorted(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, _, v in
                            (pair.partition("=") for pair in parts.query.split("&") if pair)))
    canonical = "\n".join([method.upper(), path, query, "".join(f"{n}:{signed[n]}\n" for n in names),
                           ";".join(names), hashlib.sha256(body).hexdigest()])
    to_sign = f"{ALGORITHM}\n{signed['x-sdk-date']}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return {**headers, "X-Sdk-Date": signed["x-sdk-date"], "Host": signed["host"],
            "Authorization": f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(names)}, "
                             f"Signature={signature}"}


@dataclass(frozen=True)
class PutAnswer:
    """The whole request's outcome; when delivered, ``failed`` holds each record's error (None: stored)."""

    outcome: Outcome
    reason: str
    failed: tuple[str | None, ...] = ()


class DisClient:
    """One keep-alive connection pool; not shared between threads (each delivery worker has its own)."""

    def __init__(self, dis: DisSettings, keys: tuple[str, str]) -> None:
        """``keys``: the access key and secret (``AgentSettings.dis_key_pair``)."""
        self._endpoint = dis.endpoint
        self._project_id = dis.project_id
        self._keys = keys
        verify: bool | str = str(dis.ca_file) if dis.ca_file is not None else dis.verify_tls
        self._transport = httpx.HTTPTransport(verify=verify, limits=httpx.Limits(max_keepalive_connections=4))
        self._extensions = {"timeout": httpx.Timeout(dis.timeout_s).as_dict()}

    def close(self) -> None:
        self._transport.close()

    def put_records(self, stream_name: str, records: Sequence[tuple[str, bytes]]) -> PutAnswer:
        """PutRecords of ``(partition_key, data)`` pairs, at most MAX_RECORDS and MAX_REQUEST_BYTES together."""
        body = json.dumps({"stream_name": stream_name, "records": [
            {"data": base64.b64encode(data).decode("ascii"), "partition_key": key} for key, data in records
        ]}, separators=(",", ":")).encode()
        status, answer = self._call("POST", f"/v2/{self._project_id}/records", body)
        if isinstance(answer, str):
            return PutAnswer(Outcome.RETRY, answer)
        outcome = classify(status)
        if outcome is not Outcome.DELIVERED:
            return PutAnswer(outcome, _error_text(status, answer, f"stream {stream_name}"))
        results = answer.get("records")
        if not isinstance(results, list) or len(results) != len(records):
            return PutAnswer(Outcome.RETRY, f"DIS answered HTTP {status} without one result per record")
        failed = tuple(
            None if not isinstance(r, dict) or not r.get("error_code")
            else mask_text(f"{r.get('error_code')}: {r.get('error_message', '')}")[:200]
            for r in results
        )
        return PutAnswer(Outcome.DELIVERED, f"HTTP {status}", failed)

    def describe_stream(self, stream_name: str) -> tuple[int, str]:
        """The HTTP status of DescribeStream (0: no answer) and a reason fit for diag."""
        status, answer = self._call("GET", f"/v2/{self._project_id}/streams/{quote(stream_name, safe='')}", b"")
        if isinstance(answer, str):
            return 0, answer
        if 200 <= status < 300:
            return status, f"stream {stream_name} exists"
        return status, _error_text(status, answer, f"stream {stream_name}")

    def _call(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, object] | str]:
        """(status, decoded JSON answer) or (0, why there was no answer)."""
        url = self._endpoint + path
        headers = sign(method, url, {"Content-Type": "application/json", "X-Project-Id": self._project_id},
                       body, *self._keys, datetime.now(UTC))
        try:
            request = httpx.Request(method, url, content=body, headers=headers, extensions=self._extensions)
            response = self._transport.handle_request(request)
            try:
                content = response.read()
            finally:
                response.close()
        except httpx.HTTPError as exc:
            return 0, mask_text(f"{type(exc).__name__} calling DIS at {self._endpoint}: {exc}")[:300]
        try:
            decoded = json.loads(content) if content else {}
        except ValueError:
            decoded = {}
        return response.status_code, decoded if isinstance(decoded, dict) else {}


def _error_text(status: int, answer: Mapping[str, object], what: str) -> str:
    code = answer.get("error_code") or answer.get("errorCode") or ""
    message = answer.get("error_msg") or answer.get("message") or answer.get("errorMessage") or ""
    detail = f": {code} {message}".rstrip() if code or message else ""
    return mask_text(f"HTTP {status} from DIS for {what}{detail}")[:300]
