"""Agent configuration: a TOML file plus ``EDGE_AGENT_<SECTION>__<KEY>`` environment overrides.

The key names here are a contract with users' config files, ``deploy/agent.toml`` and
``docs/configuration.md``; rename nothing without a migration note.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "EDGE_AGENT_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiSettings(_Section):
    listen: str = Field(
        "127.0.0.1:8080",
        description="host:port of the local REST API. Loopback by default: expose it only behind a firewall.",
    )
    token: SecretStr | None = Field(None, description="X-Auth-Token that every /v2 call must carry.")
    token_file: Path | None = Field(None, description="File holding the API token (used when `token` is unset).")

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def resolved_token(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip()
        return None

    @model_validator(mode="after")
    def _check_listen(self) -> ApiSettings:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("api.listen must be host:port, e.g. 127.0.0.1:8080")
        return self


class MqttTlsSettings(_Section):
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate.")
    cert_file: Path | None = Field(None, description="Client certificate (IEF's 8883 broker wants one).")
    key_file: Path | None = Field(None, description="Private key of the client certificate.")
    insecure: bool = Field(False, description="Skip the broker host-name check (test brokers only).")


class MqttSettings(_Section):
    host: str = Field("127.0.0.1", description="Broker host: the node's local broker on IEF/KubeEdge nodes.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (1883 plain, 8883 TLS).")
    topic_prefix: str | None = Field(None, description="Prefix of every agent topic; default edge-agent/{node_id}.")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    client_id: str | None = Field(None, description="Client id; default edge-agent-{node_id} (stable per node).")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(None, description="Broker password.")
    password_file: Path | None = Field(None, description="File holding the broker password.")
    tls: MqttTlsSettings | None = Field(None, description="TLS to the broker; absent = plain TCP.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval in seconds.")
    session_expiry_s: int = Field(
        86400, ge=0, description="MQTT v5 session expiry: requests queued while the agent is away survive it."
    )
    control_token: SecretStr | None = Field(
        None, description="When set, every MQTT task request must carry this value as \"token\"."
    )
    max_request_bytes: int = Field(1 << 20, ge=1024, description="Larger request payloads are refused (400).")

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return None


class VideoSource(_Section):
    """A locally managed video source: the edge analogue of a VIAS video source."""

    id: str = Field(min_length=1, max_length=128, description="The id tasks name as video_source_id.")
    url: str | None = Field(None, max_length=1000, description="Stream URL (rtsp, rtmp, http(s), file).")
    input: dict[str, Any] | None = Field(
        None,
        description="Instead of url: another input kind, e.g. {type='vcn', data={device_id=..., stream_type=1},"
        " vcn={ip=..., port=..., username=..., password=...}}.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> VideoSource:
        if (self.url is None) == (self.input is None):
            raise ValueError("a video source needs exactly one of url or input")
        return self


class Camera(_Section):
    """An edge camera known locally (fallback when the node's device twin does not know it)."""

    id: str = Field(min_length=1, max_length=63, description="The id tasks name in an edgecamera input.")
    url: str = Field(min_length=1, max_length=1000, description="The camera's stream URL.")


class StreamSettings(_Section):
    backend: Literal["pyav", "opencv"] = Field("pyav", description="Decoder backend (OpenCV is slower).")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport.")
    open_timeout_s: float = Field(5.0, gt=0, description="Timeout to open a stream.")
    read_timeout_s: float = Field(5.0, gt=0, description="Timeout of one read on an open stream.")
    stall_timeout_s: float = Field(10.0, gt=0, description="No packet for this long = stalled; reconnect.")


class VcnSettings(_Section):
    verify_tls: bool = Field(False, description="Verify VCN certificates (platforms ship self-signed ones).")
    ca_file: Path | None = Field(None, description="CA bundle for VCN servers; setting it turns verification on.")


def _check_endpoint(value: str, section: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise ValueError(f"{section}.endpoint must be an https:// URL naming only the host (and port), "
                         "e.g. https://obs.cn-north-4.myhuaweicloud.com")
    return value.rstrip("/")


class _KeyPair(_Section):
    """An access key and its secret (the secret inline or in a file)."""

    access_key: str | None = Field(None, min_length=1, description="Access key id (AK).")
    secret_key: SecretStr | None = Field(None, description="Secret access key (SK); masked everywhere.")
    secret_key_file: Path | None = Field(None, description="File holding the secret key (used when "
                                                           "`secret_key` is unset); keep it 0600.")
    verify_tls: bool = Field(True, description="Verify the endpoint's certificate.")
    ca_file: Path | None = Field(None, description="CA bundle for the endpoint (a private CA); default: "
                                                   "the system's.")

    def resolved_secret_key(self) -> str | None:
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        if self.secret_key_file is not None:
            return self.secret_key_file.read_text(encoding="utf-8").strip()
        return None

    def _has_key_pair(self) -> bool:
        return self.access_key is not None and (self.secret_key is not None or self.secret_key_file is not None)


class ObsSettings(_KeyPair):
    """The object store behind `obs` inputs and outputs: Huawei OBS or any S3-compatible server (MinIO, Ceph)."""

    endpoint: str = Field(description="https URL of the store: an OBS regional endpoint such as "
                                      "https://obs.cn-north-4.myhuaweicloud.com, or any S3-compatible server.")
    region: str = Field(min_length=1, max_length=64, description="Region the requests are signed for "
                                                                  "(cn-north-4; us-east-1 for most MinIO).")
    addressing: Literal["virtual", "path"] = Field(
        "virtual", description="virtual: https://bucket.host/key (OBS, AWS); path: https://host/bucket/key "
                              "(MinIO, Ceph, servers addressed by IP).")
    cache_max_bytes: int = Field(4 << 30, ge=1 << 20, description="obs inputs are downloaded into "
                                 "{state_dir}/cache/obs before they play; the least recently used files go "
                                 "when a new one would pass this size. A larger object is refused.")
    timeout_s: float = Field(10.0, gt=0, description="Connect and read timeout of one request to the store.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _check_endpoint(value, "obs")

    @model_validator(mode="after")
    def _keys(self) -> ObsSettings:
        if not self._has_key_pair():
            raise ValueError("obs needs access_key and secret_key (or secret_key_file)")
        return self


class DisSettings(_KeyPair):
    """Huawei Data Ingestion Service, the target of `dis` outputs (PutRecords, AK/SK signed)."""

    endpoint: str = Field(description="https URL of the DIS endpoint, e.g. https://dis.cn-north-4.myhuaweicloud.com.")
    region: str = Field(min_length=1, max_length=64, description="The region of the streams (cn-north-4).")
    project_id: str = Field(min_length=1, max_length=64, description="The project the streams belong to "
                                                                     "(part of every DIS request path).")
    keys_from_obs: bool = Field(False, description="Sign with [obs]'s access_key and secret key instead of "
                                                   "this section's own.")
    timeout_s: float = Field(10.0, gt=0, description="Connect and read timeout of one PutRecords request.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _check_endpoint(value, "dis")

    @model_validator(mode="after")
    def _keys(self) -> DisSettings:
        own = self.access_key is not None or self.secret_key is not None or self.secret_key_file is not None
        if self.keys_from_obs and own:
            raise ValueError("dis: give either keys_from_obs = true or its own access_key/secret_key, not both")
        if not self.keys_from_obs and not self._has_key_pair():
            raise ValueError("dis needs access_key and secret_key (or secret_key_file), or keys_from_obs = true")
        return self


class LimitsSettings(_Section):
    max_tasks: int = Field(32, ge=1, description="Tasks beyond this are refused at create time.")
    max_inputs: int = Field(64, ge=1, description="Inputs summed over all tasks beyond this are refused.")


class OutboxSettings(_Section):
    max_bytes: int = Field(1 << 30, ge=1 << 20, description="Size cap; at the cap the oldest events are dropped.")
    synchronous: Literal["NORMAL", "FULL"] = Field("NORMAL", description="SQLite synchronous mode.")


class RuntimeSettings(_Section):
    workers: int | Literal["auto"] = Field(
        "auto",
        description="Data-plane worker processes that decode streams and run algorithms (each has its own GIL);"
        " auto = the cores this process may use.",
    )

    @model_validator(mode="after")
    def _check_workers(self) -> RuntimeSettings:
        if self.workers != "auto" and self.workers < 1:
            raise ValueError("runtime.workers must be \"auto\" or a number >= 1")
        return self

    def worker_count(self) -> int:
        """How many worker processes to run: ``workers``, or for auto the CPUs this process may use."""
        return len(os.sched_getaffinity(0)) if self.workers == "auto" else self.workers


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["auto", "json", "text"] = Field("auto", description="auto: JSON unless on a TTY.")


class AgentSettings(BaseSettings):
    """Everything the agent reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="EDGE_AGENT_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    node_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=128,
        description="This box's id (the IEF/KubeEdge node id when it has one).",
    )
    state_dir: Path = Field(Path("/var/lib/edge-agent"), description="Where tasks and the outbox live.")
    media_roots: list[Path] = Field(
        default_factory=list, description="Folders from which local video files may be played."
    )
    models_roots: list[Path] = Field(
        default_factory=list,
        description="Folders from which object-detection models (config.common.model) may be loaded.",
    )
    api: ApiSettings = Field(default_factory=lambda: ApiSettings())
    mqtt: MqttSettings | None = Field(None, description="Absent: no MQTT control plane or event_center sink.")
    stream: StreamSettings = Field(default_factory=lambda: StreamSettings())
    vcn: VcnSettings = Field(default_factory=lambda: VcnSettings())
    obs: ObsSettings | None = Field(None, description="Absent: tasks with obs inputs or outputs are refused.")
    dis: DisSettings | None = Field(None, description="Absent: tasks with dis outputs are refused.")
    limits: LimitsSettings = Field(default_factory=lambda: LimitsSettings())
    outbox: OutboxSettings = Field(default_factory=lambda: OutboxSettings())
    runtime: RuntimeSettings = Field(default_factory=lambda: RuntimeSettings())
    log: LogSettings = Field(default_factory=lambda: LogSettings())
    video_sources: list[VideoSource] = Field(default_factory=list)
    cameras: list[Camera] = Field(default_factory=list)

    @property
    def topic_prefix(self) -> str:
        if self.mqtt is not None and self.mqtt.topic_prefix:
            return self.mqtt.topic_prefix.rstrip("/")
        return f"edge-agent/{self.node_id}"

    def dis_key_pair(self) -> tuple[str, str]:
        """DIS's access key and secret: its own, or [obs]'s when ``keys_from_obs``; OSError if a file is unreadable."""
        assert self.dis is not None
        keys: _KeyPair | None = self.obs if self.dis.keys_from_obs else self.dis
        assert keys is not None and keys.access_key is not None  # both checked by the validators
        secret = keys.resolved_secret_key()
        assert secret is not None
        return keys.access_key, secret

    @model_validator(mode="after")
    def _dis_keys_source(self) -> AgentSettings:
        if self.dis is not None and self.dis.keys_from_obs and self.obs is None:
            raise ValueError("dis.keys_from_obs needs an [obs] section")
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> AgentSettings:
        for name, items in (("video_sources", self.video_sources), ("cameras", self.cameras)):
            ids = [item.id for item in items]
            if len(ids) != len(set(ids)):
                raise ValueError(f"{name}: ids must be unique")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _config_path_var.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


class _ConfigPath:
    """Carries the chosen TOML path into settings_customise_sources (a classmethod with a fixed signature)."""

    def __init__(self) -> None:
        self._path: Path | None = None

    def get(self) -> Path | None:
        return self._path

    def set(self, path: Path | None) -> None:
        self._path = path


_config_path_var = _ConfigPath()


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The config file in effect: --config, else $EDGE_AGENT_CONFIG, else none."""
    chosen = explicit if explicit is not None else os.environ.get(CONFIG_ENV)
    return Path(chosen) if chosen else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> AgentSettings:
    """Load settings; raises FileNotFoundError or pydantic.ValidationError with the failing key."""
    resolved = config_path(path)
    if resolved is not None and not resolved.is_file():
        raise FileNotFoundError(f"config file not found: {resolved}")
    _config_path_var.set(resolved)
    try:
        return AgentSettings(**overrides)
    finally:
        _config_path_var.set(None)


def config_secrets(settings: AgentSettings) -> list[str]:
    """Every secret value the configuration holds, for the log masker: the API token, the broker password
    and control token, the object store's and DIS's secret keys, passwords inside configured
    camera/video-source URLs, and the passwords and header values of video sources given as inputs. A
    secret file that cannot be read is skipped here; the part that needs it reports the error."""
    from agent.redact import url_secrets

    values: list[str] = []
    readers = [settings.api.resolved_token]
    if settings.mqtt is not None:
        readers.append(settings.mqtt.resolved_password)
        if settings.mqtt.control_token is not None:
            values.append(settings.mqtt.control_token.get_secret_value())
    readers += [keys.resolved_secret_key for keys in (settings.obs, settings.dis) if keys is not None]
    for read in readers:
        try:
            value = read()
        except OSError:
            continue
        if value:
            values.append(value)
    urls = [camera.url for camera in settings.cameras] + [s.url for s in settings.video_sources if s.url]
    for source in settings.video_sources:
        if source.input is not None:
            values.extend(_nested_secrets(source.input))
    for url in urls:
        values.extend(url_secrets(url))
    return values


def _nested_secrets(node: Any, key: str = "") -> list[str]:
    """Passwords, header values and URL passwords anywhere in a video source's ``input`` table."""
    from agent.redact import url_secrets

    if isinstance(node, dict):
        found: list[str] = []
        for name, value in node.items():
            if name == "headers" and isinstance(value, dict):
                found.extend(str(v) for v in value.values())
            else:
                found.extend(_nested_secrets(value, name))
        return found
    if isinstance(node, list):
        return [value for item in node for value in _nested_secrets(item, key)]
    if isinstance(node, str):
        if key in ("password", "token", "secret"):
            return [node]
        if key == "url":
            return url_secrets(node)
    return []
