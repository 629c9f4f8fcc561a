from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from agent.settings import Camera, MqttSettings
from agent.sources.resolvers.base import InputRef, ResolveError
from agent.sources.resolvers.edgecamera import (
    EdgeCameraResolver,
    twin_property,
    url_in_membership,
    url_in_update,
)
from agent.sources.resolvers.twin import DeviceTwinClient
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskInputData
from tests.fixtures.edgecore import Device, EdgeCore
from tests.fixtures.mosquitto import Broker
from tests.fixtures.ports import free_port
from tests.waiting import wait_until


def ref(camera_id: str, task_id: str = "task-a", index: int = 0) -> InputRef:
    return InputRef(kind="edgecamera", data=TaskInputData(id=camera_id), vcn=None, index=index,
                    field=f"input.data[{index}]", task_id=task_id)


class Changes:
    """Collects on_change calls from the MQTT thread."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self._arrived = threading.Condition()

    def __call__(self, reason: str) -> None:
        with self._arrived:
            self.reasons.append(reason)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.reasons) >= count, timeout)
            return list(self.reasons)


# ---- parsing of EdgeCore's answers (no broker) ----

def test_twin_property_prefers_actual_over_expected() -> None:
    assert twin_property({"rtsp": {"actual": {"value": "rtsp://a"}, "expected": {"value": "rtsp://e"}}}) == "rtsp://a"
    assert twin_property({"rtsp": {"actual": {"value": ""}, "expected": {"value": "rtsp://e"}}}) == "rtsp://e"
    assert twin_property({"rtsp": {"metadata": {}}}) is None
    assert twin_property({"other": {"actual": {"value": "rtsp://a"}}}) is None
    assert twin_property("not a twin") is None


def test_membership_lists_the_attribute_of_the_named_device_only() -> None:
    answer = {"devices": [{"id": "cam-1", "attributes": {"rtsp": {"value": "rtsp://one"}}},
                          {"id": "cam-2", "attributes": {}, "twin": {"rtsp": {"expected": {"value": "rtsp://t"}}}},
                          "junk"]}
    assert url_in_membership(answer, "cam-1") == "rtsp://one"
    assert url_in_membership(answer, "cam-2") == "rtsp://t"
    assert url_in_membership(answer, "cam-3") is None
    assert url_in_membership({"devices": None}, "cam-1") is None


def test_updates_carry_the_new_url_in_two_shapes() -> None:
    assert url_in_update("$hw/events/device/c/updated", {"attributes": {"rtsp": {"value": "rtsp://n"}}}) == "rtsp://n"
    document = {"twin": {"rtsp": {"last": {"actual": {"value": "rtsp://old"}},
                                  "current": {"actual": {"value": "rtsp://new"}}}}}
    assert url_in_update("$hw/events/device/c/twin/update/document", document) == "rtsp://new"
    assert url_in_update("$hw/events/device/c/updated", {"attributes": {"other": {"value": "x"}}}) is None


# ---- without MQTT: the local cameras registry only ----

def test_without_mqtt_only_the_registry_is_asked() -> None:
    resolver = EdgeCameraResolver("node", [Camera(id="cam-1", url="rtsp://u:regpass-1@cam/1")], None)
    resolver.check(ref("cam-1"))
    assert resolver.resolve(ref("cam-1")).url == "rtsp://u:regpass-1@cam/1"
    with pytest.raises(ApiError) as caught:
        resolver.check(ref("cam-9", index=3))
    assert caught.value.params == ["input.data[3].id"]
    with pytest.raises(ResolveError, match="not in the agent's cameras registry") as failed:
        resolver.resolve(ref("cam-9"))
    assert not failed.value.retryable
    unsubscribe = resolver.watch(ref("cam-1"), lambda reason: None)
    unsubscribe()


# ---- with the real broker and an EdgeCore imitation ----

MakeResolver = Callable[..., EdgeCameraResolver]


@pytest.fixture
def make_resolver(edgecore: EdgeCore) -> Iterator[MakeResolver]:
    made: list[EdgeCameraResolver] = []

    def make(cameras: list[Camera] | None = None, timeout_s: float = 5.0, port: int | None = None,
             node_id: str | None = None) -> EdgeCameraResolver:
        settings = MqttSettings(host=edgecore.broker.host, port=port or edgecore.broker.port)
        twin = DeviceTwinClient(settings, node_id or edgecore.node_id)
        resolver = EdgeCameraResolver(node_id or edgecore.node_id, cameras or [], twin, timeout_s=timeout_s)
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        resolver.close()


@pytest.mark.integration
def test_membership_attribute_is_the_first_choice(edgecore: EdgeCore, make_resolver: MakeResolver) -> None:
    edgecore.devices["cam-1"] = Device(attribute_url="rtsp://10.1.1.1/main", twin_actual="rtsp://10.1.1.1/twin")
    resolver = make_resolver(cameras=[Camera(id="cam-1", url="rtsp://registry/1")])
    resolver.check(ref("cam-1"))  # with MQTT the device twin decides at run time
    assert resolver.resolve(ref("cam-1")).url == "rtsp://10.1.1.1/main"
    assert edgecore.count("/membership/get") == 1
    assert edgecore.count("/twin/get") == 0


@pytest.mark.integration
@pytest.mark.parametrize(("device", "expected"), [
    (Device(twin_actual="rtsp://actual/1", twin_expected="rtsp://expected/1"), "rtsp://actual/1"),
    (Device(twin_expected="rtsp://expected/1"), "rtsp://expected/1"),
])
def test_the_device_twin_answers_when_membership_has_no_attribute(
        edgecore: EdgeCore, make_resolver: MakeResolver, device: Device, expected: str) -> None:
    edgecore.devices["cam-2"] = device
    assert make_resolver().resolve(ref("cam-2")).url == expected
    assert edgecore.count("/twin/get") == 1


@pytest.mark.integration
def test_answers_without_event_id_are_taken_too(edgecore: EdgeCore, make_resolver: MakeResolver) -> None:
    edgecore.echo_event_id = False
    edgecore.devices["cam-3"] = Device(twin_actual="rtsp://twin/3")
    assert make_resolver().resolve(ref("cam-3")).url == "rtsp://twin/3"


@pytest.mark.integration
def test_unknown_to_edgecore_falls_back_to_the_registry(edgecore: EdgeCore, make_resolver: MakeResolver) -> None:
    resolver = make_resolver(cameras=[Camera(id="cam-4", url="rtsp://registry/4")])
    assert resolver.resolve(ref("cam-4")).url == "rtsp://registry/4"
    with pytest.raises(ResolveError, match=r"no rtsp attribute .* not in the agent's cameras registry") as caught:
        resolver.resolve(ref("cam-5"))
    assert caught.value.retryable


@pytest.mark.integration
def test_a_file_url_from_the_twin_is_refused(edgecore: EdgeCore, make_resolver: MakeResolver) -> None:
    edgecore.devices["cam-6"] = Device(attribute_url="file:///etc/shadow")
    with pytest.raises(ResolveError, match="must be an"):
        make_resolver().resolve(ref("cam-6"))


@pytest.mark.integration
def test_a_silent_edgecore_times_out_with_a_clear_error(edgecore: EdgeCore, make_resolver: MakeResolver) -> None:
    edgecore.answer = False
    resolver = make_resolver(cameras=[Camera(id="cam-7", url="rtsp://registry/7")], timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(ResolveError, match=r"EdgeCore did not answer \$hw/events/node/.*/membership/get "
                                           r"within 0\.5 s"):
        resolver.resolve(ref("cam-8"))
    assert time.monotonic() - started < 30  # bounded, not hung
    assert resolver.resolve(ref("cam-7")).url == "rtsp://registry/7"


@pytest.mark.integration
def test_an_unreachable_broker_times_out(edgecore: EdgeCore, make_resolver: MakeResolver) -> None:
    resolver = make_resolver(timeout_s=0.5, port=free_port())
    with pytest.raises(ResolveError, match=r"MQTT broker 127\.0\.0\.1:\d+ not reachable within 0\.5 s"):
        resolver.resolve(ref("cam-1"))


@pytest.mark.integration
def test_url_changes_trigger_on_change_for_every_watching_input(
        edgecore: EdgeCore, make_resolver: MakeResolver) -> None:
    edgecore.devices["cam-1"] = Device(attribute_url="rtsp://10.1.1.1/a")
    resolver = make_resolver()
    first, second = Changes(), Changes()
    for task in ("task-a", "task-b"):
        resolver.resolve(ref("cam-1", task))
    stop_first = resolver.watch(ref("cam-1", "task-a"), first)
    resolver.watch(ref("cam-1", "task-b"), second)
    # the SUBSCRIBEs travel asynchronously: announce until both inputs heard it (a repeat is no change)
    def both_heard() -> bool:
        edgecore.publish_attribute_update("cam-1", "rtsp://10.1.1.1/b")
        return bool(first.reasons and second.reasons)

    wait_until(both_heard, 10, "both inputs to hear the change", interval=0.2)
    assert first.reasons == ["edgecamera cam-1: the rtsp URL changed ($hw/events/device/cam-1/updated)"]
    assert len(second.reasons) == 1
    assert resolver.resolve(ref("cam-1", "task-a")).url == "rtsp://10.1.1.1/b"

    edgecore.publish_attribute_update("cam-1", "rtsp://10.1.1.1/b")  # the same URL again: no reconnect
    edgecore.client.publish("$hw/events/device/cam-1/twin/update/document", b"not json")  # type: ignore[union-attr]
    edgecore.publish_twin_update("cam-1", "rtsp://10.1.1.1/c")
    assert first.wait_for(2) == [
        "edgecamera cam-1: the rtsp URL changed ($hw/events/device/cam-1/updated)",
        "edgecamera cam-1: the rtsp URL changed ($hw/events/device/cam-1/twin/update/document)",
    ]

    stop_first()
    edgecore.publish_attribute_update("cam-1", "rtsp://10.1.1.1/d")
    assert len(second.wait_for(3)) == 3
    assert len(first.reasons) == 2


@pytest.mark.integration
def test_lookups_and_watches_survive_a_broker_restart(private_mosquitto: Broker) -> None:
    core = EdgeCore(private_mosquitto)
    core.start()
    core.devices["cam-1"] = Device(attribute_url="rtsp://10.1.1.1/a")
    twin = DeviceTwinClient(MqttSettings(host=private_mosquitto.host, port=private_mosquitto.port), core.node_id)
    resolver = EdgeCameraResolver(core.node_id, [], twin, timeout_s=5.0)
    changes = Changes()
    try:
        assert resolver.resolve(ref("cam-1")).url == "rtsp://10.1.1.1/a"
        resolver.watch(ref("cam-1"), changes)
        core.stop()
        private_mosquitto.stop()
        private_mosquitto.start()
        core = EdgeCore(private_mosquitto, node_id=core.node_id, devices=core.devices)
        core.start()
        # the twin client reconnects on its own (paho backoff 1-60 s); the lookup waits up to its timeout
        def resolved() -> str | None:
            try:
                return resolver.resolve(ref("cam-1")).url
            except ResolveError:
                return None

        assert wait_until(resolved, 30, "a lookup after the broker restart", interval=0) == "rtsp://10.1.1.1/a"
        core.publish_attribute_update("cam-1", "rtsp://10.1.1.1/b")
        assert changes.wait_for(1)
    finally:
        resolver.close()
        core.stop()
