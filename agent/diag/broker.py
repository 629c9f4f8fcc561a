"""The broker: connect, subscribe and a QoS 1 round trip under the topic prefix, with diag's own client."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from typing import Any

from agent.diag.agent_api import AgentView
from agent.diag.options import DiagOptions
from agent.diag.report import Check, Level, Progress, masked_check
from agent.settings import AgentSettings


def check_broker(settings: AgentSettings, options: DiagOptions, view: AgentView | None,
                 progress: Progress) -> list[Check]:
    """The round trip first; then, when the broker answers diag, whether the running agent is connected."""
    mqtt_settings = settings.mqtt
    if mqtt_settings is None:
        return [masked_check("broker", "broker", Level.OK, "not configured: REST only, no event_center output")]
    progress(f"connecting to the broker {mqtt_settings.host}:{mqtt_settings.port} …")
    result = round_trip(settings, options.timeout_s)
    checks = [result]
    if view is not None and result.level is Level.OK:
        for channel in ("control", "events"):
            if view.value("edge_agent_mqtt_connected", channel=channel) == 0.0:
                checks.append(masked_check(
                    "broker", f"agent's {channel} connection", Level.WARN,
                    "the running agent is not connected, though the broker answers diag",
                    "It reconnects with backoff; if it stays down, see journalctl -u edge-agent "
                    "(credentials or client id clash?)."))
    return checks


def round_trip(settings: AgentSettings, timeout_s: float) -> Check:
    from agent.mqtt_client import new_client

    config = settings.mqtt
    assert config is not None
    where = f"{config.host}:{config.port}"
    try:
        config.resolved_password()  # read here too: new_client's OSError would not say which file failed
    except OSError as exc:
        return masked_check("broker", "broker", Level.FAIL, f"cannot read mqtt.password_file: {exc.strerror}",
                            "Run diag as the agent's user, or fix the file's permissions.")
    try:
        # a client id of its own: reusing the agent's would disconnect the running agent
        client = new_client(config, f"edge-agent-diag-{uuid.uuid4().hex[:12]}", reconnect_on_failure=False)
    except (OSError, ValueError, ssl.SSLError) as exc:
        return masked_check("broker", "broker", Level.FAIL, f"TLS set-up failed: {exc}",
                            "Check mqtt.tls.ca_file, cert_file and key_file.")
    topic = f"{settings.topic_prefix}/diag/{uuid.uuid4().hex}"
    connected, subscribed, echoed = threading.Event(), threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        outcome["connack"] = reason
        connected.set()

    def on_subscribe(_c: Any, _u: Any, _m: Any, reasons: Any, _p: Any = None) -> None:
        outcome["suback"] = list(reasons)
        subscribed.set()

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        if message.topic == topic:
            echoed.set()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect_timeout = timeout_s
    started = time.monotonic()
    try:
        client.connect(config.host, config.port, keepalive=max(5, int(timeout_s * 3)))
    except ConnectionRefusedError:
        return masked_check("broker", "broker", Level.FAIL, f"{where}: connection refused",
                            "Is the broker running on that host? Check mqtt.host and mqtt.port.", where=where)
    except ssl.SSLError as exc:
        return masked_check("broker", "broker", Level.FAIL, f"{where}: TLS handshake failed: {exc.reason or exc}",
                            "Check mqtt.tls.ca_file (the broker's CA) and that the host name matches the "
                            "certificate.")
    except TimeoutError:
        return masked_check("broker", "broker", Level.FAIL, f"{where}: no answer within {timeout_s:g} s",
                            "A firewall drops the packets, or the host is down.", where=where)
    except OSError as exc:
        return masked_check("broker", "broker", Level.FAIL, f"{where}: {exc.strerror or exc}",
                            "Check mqtt.host (DNS name or address) and the network.", where=where)
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            return masked_check("broker", "broker", Level.FAIL,
                                f"{where}: TCP open but no CONNACK in {timeout_s:g} s",
                                "Is it an MQTT port? A TLS port needs [mqtt.tls]; a plain one must not have it.")
        connack = outcome["connack"]
        if connack.is_failure:
            return masked_check("broker", "broker", Level.FAIL,
                                f"{where}: connection refused by the broker: {connack}",
                                "Check mqtt.username and mqtt.password/password_file, and the broker's ACL.")
        connect_ms = (time.monotonic() - started) * 1000
        sub_started = time.monotonic()
        client.subscribe(topic, qos=1)
        if not subscribed.wait(timeout_s):
            return masked_check("broker", "broker", Level.FAIL,
                                f"{where}: connected, but no SUBACK in {timeout_s:g} s",
                                "The broker is overloaded or misbehaving.")
        if any(getattr(code, "is_failure", False) for code in outcome["suback"]):
            return masked_check("broker", "broker", Level.FAIL,
                                f"{where}: subscribe to {settings.topic_prefix}/# refused",
                                "The broker's ACL must let this user subscribe and publish under the topic prefix.")
        subscribe_ms = (time.monotonic() - sub_started) * 1000
        sent = time.monotonic()
        client.publish(topic, b"diag", qos=1)
        if not echoed.wait(timeout_s):
            return masked_check("broker", "broker", Level.FAIL,
                                f"{where}: a QoS 1 message to {topic} did not come back in {timeout_s:g} s",
                                "The broker's ACL may forbid publishing under the topic prefix.")
        rtt_ms = (time.monotonic() - sent) * 1000
    finally:
        client.disconnect()
        client.loop_stop()
    level = Level.OK if rtt_ms < 1000 else Level.WARN
    return masked_check("broker", "broker", level,
                        f"{where}: connect {connect_ms:.0f} ms, subscribe {subscribe_ms:.0f} ms, "
                        f"round trip {rtt_ms:.0f} ms",
                        None if level is Level.OK else "Slow broker or network: events and requests will lag.",
                        where=where, connect_ms=round(connect_ms, 1), subscribe_ms=round(subscribe_ms, 1),
                        round_trip_ms=round(rtt_ms, 1))
