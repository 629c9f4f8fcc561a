"""The supervisor with real parts: files decoded by PyAV, the intrusion algorithm, the outbox and a
real webhook receiver; schedules followed with an injected clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.app import AgentRuntime
from agent.settings import AgentSettings
from agent.tasks.model import TaskState
from tests.fixtures.ports import free_port
from tests.fixtures.webhook import WebhookReceiver
from tests.runtime.scenes import intrusion_clip, intrusion_task
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now



@pytest.fixture
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("media")
    intrusion_clip(directory / "walk.mp4")
    return directory


def make_runtime(tmp_path: Path, media: Path, clock: Callable[[], datetime] | None = None,
                 **settings: Any) -> AgentRuntime:
    config = AgentSettings(node_id="sup-test", state_dir=tmp_path / "state", media_roots=[media],
                           api={"listen": f"127.0.0.1:{free_port()}", "token": "t0k3n-test"}, **settings)
    kwargs: dict[str, Any] = {"realtime_files": False}
    if clock is not None:
        kwargs["clock"] = clock
    return AgentRuntime(config, **kwargs)


def test_file_task_runs_end_to_end_and_succeeds(tmp_path: Path, media: Path, webhook_receiver: WebhookReceiver,
                                                runtimes: list[AgentRuntime]) -> None:
    runtime = make_runtime(tmp_path, media)
    runtimes.append(runtime)
    runtime.start()
    task_id = runtime.service.create("p", "intrusion-detection",
                                     intrusion_task(str(media / "walk.mp4"), webhook_receiver.url))
    received = webhook_receiver.wait_for(1, timeout=60)
    envelope = received[0].json
    assert envelope["event_type"] == 196609 and envelope["task_id"] == task_id
    assert envelope["stream_id"] == "input-0"
    box = envelope["data"]["event_set"][0]["bounding_box"]
    assert box["x"] + box["w"] > 160  # inside the right-half zone
    assert received[0].headers.get("authorization") == "Bearer hook-secret-77"
    wait_until(lambda: runtime.service.get("p", task_id).state is TaskState.SUCCEEDED, what="SUCCEEDED")
    record = runtime.service.get("p", task_id)
    assert record.desired.value == "STOPPED"  # a finished file is not replayed after a restart


def test_bad_algorithm_is_refused_at_create_and_missing_one_fails_start(
        tmp_path: Path, media: Path, webhook_receiver: WebhookReceiver, runtimes: list[AgentRuntime]) -> None:
    from agent.tasks.errors import ApiError

    runtime = make_runtime(tmp_path, media)
    runtimes.append(runtime)
    runtime.start()
    raw = intrusion_task(str(media / "walk.mp4"), webhook_receiver.url)
    with pytest.raises(ApiError) as caught:
        runtime.service.create("p", "no-such-algorithm", raw)
    assert caught.value.params == ["service_name"]
    raw["config"] = {"common": {"min_area": "big"}}
    with pytest.raises(ApiError) as caught:
        runtime.service.create("p", "intrusion-detection", raw)
    assert caught.value.params == ["config.common.min_area"]
    raw["input"] = {"type": "url", "data": [{"url": "/etc/passwd"}]}
    raw["config"] = {"common": {}}
    with pytest.raises(ApiError) as caught:
        runtime.service.create("p", "intrusion-detection", raw)
    assert caught.value.params == ["input.data[0].url"]


def test_schedule_starts_and_stops_on_time_with_injected_clock(
        tmp_path: Path, media: Path, webhook_receiver: WebhookReceiver, runtimes: list[AgentRuntime]) -> None:
    monday_noon = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)  # 12:00 at +08:00
    clock = Clock(monday_noon)
    runtime = make_runtime(tmp_path, media, clock=clock)
    runtimes.append(runtime)
    runtime.start()
    # an input that never ends (nor connects): a file could finish, and SUCCEED, inside the window
    raw = intrusion_task("rtsp://127.0.0.1:9/none", webhook_receiver.url)
    raw["schedule"] = {"type": "weekly", "timezone": "+08:00", "days_of_week": [1],
                       "periods": [[{"begin_at": "12:01:00", "end_at": "12:02:00"}]]}
    task_id = runtime.service.create("p", "intrusion-detection", raw)
    shown = wait_until(lambda: (s := runtime.service.show("p", task_id))["schedule_status"] and s,
                       what="schedule status")
    assert shown["state"] == "STOPPED" and shown["schedule_status"]["status"] == "WAITING"
    assert shown["schedule_status"]["next_start"] == (monday_noon + timedelta(minutes=1)).isoformat()
    clock.now = monday_noon + timedelta(seconds=61)
    runtime.supervisor.wake()
    wait_until(lambda: runtime.supervisor.pipelines(), what="pipeline started in the window")
    assert runtime.service.show("p", task_id)["schedule_status"]["status"] == "ACTIVE"
    clock.now = monday_noon + timedelta(seconds=121)
    runtime.supervisor.wake()
    wait_until(lambda: not runtime.supervisor.pipelines(), what="pipeline stopped after the window")
    wait_until(lambda: runtime.service.show("p", task_id)["state"] == "STOPPED", what="STOPPED")
    shown = runtime.service.show("p", task_id)
    assert shown["state"] == "STOPPED" and shown["schedule_status"]["status"] == "WAITING"
    assert shown["desired_state"] == "RUNNING"  # the schedule stopped it, not the user


def test_tasks_resume_after_restart_and_stop_is_obeyed(
        tmp_path: Path, media: Path, webhook_receiver: WebhookReceiver, runtimes: list[AgentRuntime]) -> None:
    raw = intrusion_task(str(media / "walk.mp4"), webhook_receiver.url)
    raw["input"] = {"type": "url", "data": [{"url": "rtsp://127.0.0.1:9/none"}]}  # never connects
    runtime = make_runtime(tmp_path, media)
    runtime.start()
    running = runtime.service.create("p", "intrusion-detection", raw)
    stopped = runtime.service.create("p", "intrusion-detection", {**raw, "name": "stopped-one"})
    runtime.service.stop("p", stopped)
    wait_until(lambda: runtime.service.get("p", running).state is TaskState.ABNORMAL, what="ABNORMAL")
    assert "input 0" in runtime.service.get("p", running).status
    runtime.stop()
    runtime = make_runtime(tmp_path, media)
    runtimes.append(runtime)
    runtime.start()
    assert [p.task_id for p in runtime.supervisor.pipelines()] == [running]
    assert runtime.service.get("p", stopped).state is TaskState.STOPPED


def test_update_of_a_running_task_restarts_it_with_the_new_spec(
        tmp_path: Path, media: Path, webhook_receiver: WebhookReceiver, runtimes: list[AgentRuntime]) -> None:
    runtime = make_runtime(tmp_path, media)
    runtimes.append(runtime)
    runtime.start()
    raw = intrusion_task("rtsp://127.0.0.1:9/none", webhook_receiver.url)
    task_id = runtime.service.create("p", "intrusion-detection", raw)
    # the input's URL shows once its stream has resolved it, a moment after the pipeline exists
    first = wait_until(lambda: (p := runtime.supervisor.pipelines()) and p[0].inputs[0].url and p[0],
                       what="first pipeline with its input resolved")
    assert first.inputs[0].url == "rtsp://127.0.0.1:9/none"
    runtime.service.update("p", task_id, {"input": {"type": "url", "data": [{"url": str(media / "walk.mp4")}]}})
    wait_until(lambda: (p := runtime.supervisor.pipelines()) and p[0].inputs[0].url != first.inputs[0].url,
               what="the pipeline to be replaced")
    assert webhook_receiver.wait_for(1, timeout=60)[0].json["task_id"] == task_id


def test_a_task_whose_algorithm_vanished_is_start_failed(tmp_path: Path, media: Path,
                                                          runtimes: list[AgentRuntime]) -> None:
    from agent.tasks.model import parse_create
    from agent.tasks.store import Desired, TaskRecord, TaskStore, now_ms

    store = TaskStore(tmp_path / "state")
    spec = parse_create(intrusion_task(str(media / "walk.mp4"), "http://127.0.0.1:9/hook"))
    store.insert(TaskRecord("f" * 32, "p", "uninstalled-plugin", spec, TaskState.RUNNING, Desired.RUNNING,
                            created_at=now_ms(), updated_at=now_ms()))
    store.close()
    runtime = make_runtime(tmp_path, media)
    runtimes.append(runtime)
    runtime.start()
    record = wait_until(lambda: (r := runtime.service.get("p", "f" * 32)).state is TaskState.START_FAILED and r,
                        what="START_FAILED")
    assert record.error is not None and "uninstalled-plugin" in record.error.message
    assert runtime.supervisor.pipelines() == []
    assert runtime.supervisor.healthy()


def test_a_task_the_config_no_longer_allows_is_start_failed_with_the_field(
        tmp_path: Path, media: Path, webhook_receiver: WebhookReceiver, runtimes: list[AgentRuntime]) -> None:
    runtime = make_runtime(tmp_path, media)
    task_id = runtime.service.create("p", "intrusion-detection",
                                     intrusion_task(str(media / "walk.mp4"), webhook_receiver.url))
    runtime.service.stop("p", task_id)
    runtime.store.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runtime = make_runtime(tmp_path, elsewhere)  # the media root moved: the file is not playable any more
    runtimes.append(runtime)
    runtime.start()
    runtime.service.start("p", task_id)
    record = wait_until(lambda: (r := runtime.service.get("p", task_id)).state is TaskState.START_FAILED and r,
                        what="START_FAILED")
    assert record.error is not None and "input.data[0].url" in record.error.message


def test_installed_algorithms_are_scanned_once_per_create_and_once_per_start(
        tmp_path: Path, media: Path, webhook_receiver: WebhookReceiver, runtimes: list[AgentRuntime],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.algorithms import registry

    scans: list[int] = []
    real_installed = registry.installed

    def counted() -> dict[str, Any]:
        scans.append(1)
        return real_installed()

    monkeypatch.setattr(registry, "installed", counted)
    runtime = make_runtime(tmp_path, media)
    runtimes.append(runtime)
    runtime.start()
    task_id = runtime.service.create("p", "intrusion-detection",
                                     intrusion_task(str(media / "walk.mp4"), webhook_receiver.url))
    assert len(scans) == 1
    webhook_receiver.wait_for(1, timeout=60)
    wait_until(lambda: runtime.service.get("p", task_id).state is TaskState.SUCCEEDED, what="the file played")
    assert len(scans) == 2  # the start loaded the algorithm; nothing else scanned again
