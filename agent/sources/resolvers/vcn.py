"""``vcn`` inputs: ask a VCN (IVS) video platform for a camera's RTSP URL over its REST API.

One logged-in session per (ip, port, username) serves every input on that platform; a named thread
keeps it alive (the platform drops idle sessions after about 30 minutes) and ``close`` logs out.
The calls and result codes follow Huawei's ModelBox VCN client (see docs/inputs.md).
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from agent.redact import secrets
from agent.sources.resolvers.base import InputRef, InputResolver, ResolveError, check_remote_url
from agent.sources.target import StreamTarget
from agent.tasks.errors import invalid

log = logging.getLogger(__name__)

KEEPALIVE_S = 600.0
TIMEOUT_S = 10.0
LOGIN_PATH = "/loginInfo/login/v1.0"
RTSP_URL_PATH = "/video/rtspurl/v1.0"
KEEPALIVE_PATH = "/common/keepAlive"
LOGOUT_PATH = "/users/logout"
SESSION_COOKIE = "JSESSIONID"
# Login result codes that still open a session, and what the operator should do about them.
PASSWORD_EXPIRED = 119101305
FIRST_LOGIN = 119101308
ACCEPTED_LOGIN_CODES = {0, PASSWORD_EXPIRED, FIRST_LOGIN}

SessionKey = tuple[str, int, str]


def tls_verify(verify_tls: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    """Off by default (platforms ship self-signed certificates); a CA file turns verification on."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return verify_tls


class VcnSession:
    """A logged-in session on one VCN platform, shared by all inputs that name it."""

    def __init__(self, ip: str, port: int, username: str, password: str, *,
                 verify: ssl.SSLContext | bool, timeout_s: float, keepalive_s: float) -> None:
        self.key: SessionKey = (ip, port, username)
        self.where = f"VCN {ip}:{port}"
        self._username = username
        self._password = password
        self._keepalive_s = keepalive_s
        host = f"[{ip}]" if ":" in ip else ip
        self._client = httpx.Client(base_url=f"https://{host}:{port}", verify=verify, timeout=timeout_s,
                                    follow_redirects=False)
        self._lock = threading.Lock()  # one login at a time; guards the fields below
        self._logged_in = False
        # A refused login, answered to every lookup without asking the platform again (repeating it would
        # lock the account) until a task using the account starts again or brings another password.
        self._refusal: str | None = None
        self._generation = 0  # bumped by every login, so concurrent inputs re-login only once per expiry
        self._stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        # the password and the session cookie stay masked while this session may use them, and no longer
        self._secrets_owner = f"vcn-session:{uuid.uuid4().hex}"
        secrets.register(self._secrets_owner, [password])

    def set_password(self, password: str) -> None:
        """A task brought a different password for this account: use it from the next login on."""
        with self._lock:
            if password != self._password:
                self._password = password
                self._logged_in = False
                # the old session cookie is still sent until the next login replaces it
                secrets.register(self._secrets_owner, [password, self._client.cookies.get(SESSION_COOKIE)])
                self._refusal = None

    def allow_login(self) -> None:
        """A task using this account starts (again): its lookup may try a refused login once more."""
        with self._lock:
            self._refusal = None

    def rtsp_url(self, device_id: str, stream_type: int) -> str:
        generation = self._ensure_login()
        code, body = self._ask_rtsp_url(device_id, stream_type)
        if code != 0:
            # The platform's session-expired codes are not documented, so any refusal earns one fresh login.
            log.info("%s refused the RTSP URL of camera %s (code %s); logging in again once",
                     self.where, device_id, code)
            self._relogin(generation)
            code, body = self._ask_rtsp_url(device_id, stream_type)
        if code != 0:
            raise ResolveError(f"{self.where}: rtspurl for camera {device_id} failed with resultCode {code}")
        return check_remote_url(body.get("rtspURL"), f"{self.where}: rtspURL of camera {device_id}")

    def _ask_rtsp_url(self, device_id: str, stream_type: int) -> tuple[int | str, dict[str, Any]]:
        payload = {
            "cameraCode": device_id,
            "mediaURLParam": {"serviceType": 1, "streamType": stream_type, "protocolType": 2, "transMode": 0,
                              "broadCastType": 0, "packProtocolType": 1, "clientType": 1},
        }
        response = self._call("POST", RTSP_URL_PATH, json=payload)
        if response.status_code in (401, 403):
            return f"HTTP {response.status_code}", {}
        body = self._json(response, "rtspurl")
        return body.get("resultCode", "missing"), body

    def _ensure_login(self) -> int:
        with self._lock:
            if not self._logged_in:
                if self._refusal is not None:
                    raise ResolveError(self._refusal, retryable=False)
                self._login_locked()
            return self._generation

    def _relogin(self, seen_generation: int) -> None:
        with self._lock:
            if self._generation == seen_generation:
                self._logged_in = False
                self._login_locked()

    def _login_locked(self) -> None:
        self._client.cookies.clear()
        response = self._call("POST", LOGIN_PATH, json={"userName": self._username, "password": self._password})
        body = self._json(response, "login")
        code = body.get("resultCode", "missing")
        if code not in ACCEPTED_LOGIN_CODES:
            # Not retryable: repeating a refused login would lock the account on most platforms.
            self._refusal = f"{self.where}: login as {self._username} refused with resultCode {code}"
            raise ResolveError(self._refusal, retryable=False)
        session_id = self._client.cookies.get(SESSION_COOKIE)
        if not session_id:
            raise ResolveError(f"{self.where}: login answered without a {SESSION_COOKIE} cookie")
        secrets.register(self._secrets_owner, [self._password, session_id])
        if code == PASSWORD_EXPIRED:
            log.warning("%s: the password of %s has expired; change it on the platform", self.where,
                        self._username)
        elif code == FIRST_LOGIN:
            log.warning("%s: first login of %s; the platform asks for a password change", self.where,
                        self._username)
        else:
            log.info("%s: logged in as %s", self.where, self._username)
        self._logged_in = True
        self._refusal = None
        self._generation += 1
        if self._keepalive is None:
            self._keepalive = threading.Thread(target=self._keep_alive, daemon=True,
                                               name=f"vcn-keepalive-{self.key[0]}:{self.key[1]}")
            self._keepalive.start()

    def _keep_alive(self) -> None:
        while not self._stop.wait(self._keepalive_s):
            try:
                with self._lock:
                    if not self._logged_in:
                        if self._refusal is None:
                            self._login_locked()
                        continue
                response = self._call("GET", KEEPALIVE_PATH)
                code = self._json(response, "keepAlive").get("resultCode", "missing")
                if code != 0:
                    raise ResolveError(f"{self.where}: keepAlive answered resultCode {code}")
            except ResolveError as exc:
                log.warning("%s; logging in again on the next keep-alive or lookup", exc)
                with self._lock:
                    self._logged_in = False

    def close(self) -> None:
        self._stop.set()
        if self._keepalive is not None:
            self._keepalive.join(timeout=self._client.timeout.read or TIMEOUT_S)
        with self._lock:
            if self._logged_in:
                try:
                    self._call("GET", LOGOUT_PATH)
                    log.info("%s: logged out %s", self.where, self._username)
                except ResolveError as exc:
                    log.warning("%s (logout)", exc)
                self._logged_in = False
        self._client.close()
        secrets.forget(self._secrets_owner)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ResolveError(f"{self.where}: no reply to {path} within the timeout") from None
        except httpx.HTTPError as exc:
            raise ResolveError(f"{self.where}: {path}: {type(exc).__name__}: {exc}") from None

    def _json(self, response: httpx.Response, call: str) -> dict[str, Any]:
        if not response.is_success:
            raise ResolveError(f"{self.where}: {call} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise ResolveError(f"{self.where}: {call} answered something that is not JSON") from None
        if not isinstance(body, dict):
            raise ResolveError(f"{self.where}: {call} answered JSON that is not an object")
        return body


class VcnResolver(InputResolver):
    kind = "vcn"

    def __init__(self, *, verify: ssl.SSLContext | bool, timeout_s: float = TIMEOUT_S,
                 keepalive_s: float = KEEPALIVE_S) -> None:
        self._verify = verify
        self._timeout_s = timeout_s
        self._keepalive_s = keepalive_s
        self._lock = threading.Lock()
        self._sessions: dict[SessionKey, VcnSession] = {}

    def check(self, ref: InputRef) -> None:
        if ref.vcn is None:
            raise invalid("input.vcn", "is mandatory for vcn inputs")
        if ref.vcn.port == 0:
            raise invalid("input.vcn.port", "must be the platform's HTTPS port (1-65535)")

    def resolve(self, ref: InputRef) -> StreamTarget:
        if ref.vcn is None:
            raise ResolveError(f"{ref.field}: a vcn input without a vcn server", retryable=False)
        session = self.session(ref.vcn.ip, ref.vcn.port, ref.vcn.username, ref.vcn.password)
        url = session.rtsp_url(ref.data.device_id or "", ref.data.stream_type or 1)
        # protocolType 2 asks the platform for RTSP over TCP
        return StreamTarget(url=url, transport="tcp")

    def begin(self, ref: InputRef) -> None:
        if ref.vcn is None:
            return
        with self._lock:
            session = self._sessions.get((ref.vcn.ip, ref.vcn.port, ref.vcn.username))
        if session is not None:
            session.allow_login()

    def session(self, ip: str, port: int, username: str, password: str) -> VcnSession:
        with self._lock:
            session = self._sessions.get((ip, port, username))
            if session is None:
                session = VcnSession(ip, port, username, password, verify=self._verify,
                                     timeout_s=self._timeout_s, keepalive_s=self._keepalive_s)
                self._sessions[session.key] = session
                return session
        session.set_password(password)
        return session

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()
