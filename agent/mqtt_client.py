"""The one place a paho client is built from ``MqttSettings``: protocol, credentials, TLS, reconnect pacing.

The control plane, the event sink, the device-twin client and diag each open their own connection (one
link's reconnect must not stall another's), but they must agree on how to reach and authenticate to the
broker; before this module each did it its own way and they drifted.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.backoff import MQTT_RECONNECT, BackoffPolicy
from agent.redact import secrets
from agent.settings import MqttSettings


def new_client(settings: MqttSettings, client_id: str, *, persistent_session: bool = False,
               manual_ack: bool = False, reconnect_on_failure: bool = True,
               reconnect: BackoffPolicy = MQTT_RECONNECT, log_name: str | None = None) -> mqtt.Client:
    """A configured, unconnected client. ``persistent_session`` keeps the broker's session across
    reconnects (MQTT 3.1.1 ``clean_session=False``; for v5 pass ``clean_start=False`` and a session
    expiry to ``connect_async``). When paho drives reconnects (``reconnect_on_failure``) it waits
    between ``reconnect``'s bounds (tests pass a faster policy); a caller that drives them itself uses
    ``Backoff(MQTT_RECONNECT)``.

    Raises OSError when the password file cannot be read, ``ssl.SSLError``/ValueError on a bad TLS set-up.
    """
    v5 = settings.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else not persistent_session,
        manual_ack=manual_ack,
        reconnect_on_failure=reconnect_on_failure,
    )
    if log_name is not None:
        client.enable_logger(logging.getLogger(log_name))
    # paho takes whole seconds
    client.reconnect_delay_set(max(1, round(reconnect.first_s)), max(1, round(reconnect.max_s)))
    if settings.username is not None:
        password = settings.resolved_password()
        secrets.register("config:mqtt.password", [password])
        client.username_pw_set(settings.username, password)
    if settings.tls is not None:
        tls = settings.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(tls.insecure)
    client.on_socket_open = _no_delay
    return client


def _no_delay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    # An answer or event often follows another publish at once; Nagle would hold it for the broker's delayed ACK.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
