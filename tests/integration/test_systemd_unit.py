"""The shipped unit under a real PID-1 systemd: install.sh as a user runs it, then the unit's whole life.

This box has no systemd as PID 1, so the test boots the machine's own OS in a ``systemd-nspawn``
container that shares the host's network (free loopback ports reach the webhook receiver and the RTSP
server the test starts on the host). The host is left untouched: the container's root is a tmpfs with
the host's /usr read-only, and /etc, /opt and /usr/local are overlays whose writable layers live in a
temporary folder. Inside, ``deploy/install.sh`` does what it does on a box: creates the user, builds
the venv with every dependency, installs the config and the unit, ``systemctl enable --now``.

Then, under the unit's own sandbox (dedicated user, ProtectSystem=strict, the syscall filter,
MemoryDenyWriteExecute):
- the unit is active only once READY arrived, with its STATUS= line;
- it stays up past 2 × WatchdogSec; a task on a local clip delivers to a webhook; tasks.db and
  outbox.db live under StateDirectory;
- SIGKILL of the main process → Restart=on-failure brings it back and an RTSP task resumes;
- a supervisor loop wedged by a plugin whose config check blocks → the watchdog kills it, systemd
  restarts it;
- ``systemctl stop`` finishes within TimeoutStopSec (systemd's own verdict: Result=success).

It needs root and the ``systemd-container`` package (scripts/test.sh installs it). docs/operations.md
says how to run it by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.ports import free_port
from tests.fixtures.rtsp import RtspServer
from tests.fixtures.webhook import WebhookReceiver
from tests.runtime.scenes import intrusion_clip, intrusion_task
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
STUCK_PLUGIN = REPO / "tests" / "fixtures" / "stuck_algorithm"
UNIT = "edge-agent.service"
INSIDE = Path("/srv/edge-test")  # the test's shared folder as the container sees it
SOURCE_INSIDE = Path("/srv/edge-src")
BOOT_S = 120.0
INSTALL_S = 600.0  # pip builds the venv with numpy, OpenCV and PyAV: minutes on a busy box
WAIT_S = 90.0
# Variables of the test's own interpreter that must not leak into install.sh or systemctl.
PYTHON_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTEST_CURRENT_TEST")


@dataclass
class Container:
    """One booted container; ``run`` executes a command in all of its namespaces (as root)."""

    process: subprocess.Popen[bytes]
    leader: int
    console: Path

    def run(self, *command: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in PYTHON_ENV}
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        done = subprocess.run(["nsenter", "-t", str(self.leader), "-a", *command], capture_output=True, text=True,
                              timeout=timeout, check=False, env=env)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def unit(self, *properties: str) -> dict[str, str]:
        shown = self.run("systemctl", "show", UNIT, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", UNIT).stdout

    def proc_status(self, pid: str) -> dict[str, str]:
        text = self.run("cat", f"/proc/{pid}/status").stdout
        return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def _leader(nspawn_pid: int) -> int | None:
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


@pytest.fixture
def container(tmp_path: Path) -> Iterator[tuple[Container, Path]]:
    if os.geteuid() != 0:
        pytest.skip("booting a systemd container needs root")
    if shutil.which("systemd-nspawn") is None:
        pytest.fail("systemd-nspawn is missing: apt-get install systemd-container (scripts/test.sh does)")
    shared = tmp_path / "shared"
    layers = {name: tmp_path / "layers" / name for name in ("etc", "opt", "usr-local")}
    for folder in (shared / "media", *layers.values()):
        folder.mkdir(parents=True)
    # The agent runs as its own user: it must be able to read the shared folder and the clip in it.
    for folder in (tmp_path, shared, shared / "media"):
        folder.chmod(0o755)
    console = tmp_path / "console.log"
    with console.open("wb") as log:
        process = subprocess.Popen(
            ["systemd-nspawn", "--register=no", "--keep-unit", "--directory=/", "--volatile=yes",
             f"--overlay=/etc:{layers['etc']}:/etc", f"--overlay=/opt:{layers['opt']}:/opt",
             f"--overlay=/usr/local:{layers['usr-local']}:/usr/local",
             f"--bind={shared}:{INSIDE}", f"--bind-ro={REPO}:{SOURCE_INSIDE}",
             "--console=pipe", "-b", "--", "systemd.unit=basic.target"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        leader = wait_until(lambda: process.poll() is None and _leader(process.pid), BOOT_S, "the container's init")
        box = Container(process, leader, console)
        # until systemd answers at all, is-system-running fails at once; "degraded" is fine: units of the
        # host that cannot run in a container are not ours
        wait_until(lambda: box.run("systemctl", "is-system-running", "--wait", timeout=BOOT_S, check=False)
                   .stdout.strip() in ("running", "degraded"), BOOT_S, "the container's boot", interval=0.5)
        yield box, shared
    finally:
        if process.poll() is None:
            subprocess.run(["nsenter", "-t", str(_leader(process.pid) or 0), "-a", "systemctl", "poweroff"],
                           capture_output=True, timeout=30, check=False)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _install(box: Container, shared: Path, port: int) -> str:
    config = shared / "agent.toml"
    config.write_text(
        'node_id = "systemd-test"\n'
        f'media_roots = ["{INSIDE}/media"]\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\ntoken_file = "/etc/edge-agent/token"\n'
    )
    config.chmod(0o644)
    done = box.run("sh", f"{SOURCE_INSIDE}/deploy/install.sh", "--skip-apt", "--config", f"{INSIDE}/agent.toml",
                   timeout=INSTALL_S)
    assert "unit enabled and started" in done.stdout, done.stdout
    return box.run("cat", "/etc/edge-agent/token").stdout.strip()


def _build_stuck_plugin(shared: Path) -> Path:
    source = shared / "stuck-src"
    shutil.copytree(STUCK_PLUGIN, source)  # pip writes build/ into the tree it builds
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(shared / "wheels"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (shared / "wheels").glob("*.whl")
    wheel.chmod(0o644)
    return INSIDE / "wheels" / wheel.name


def _events_for(receiver: WebhookReceiver, task_id: str) -> int:
    return sum(1 for hook in receiver.delivered() if hook.json and hook.json.get("task_id") == task_id)


def _task_state(api: httpx.Client, task_id: str) -> str:
    return str(api.get(f"/v2/p1/tasks/{task_id}").json().get("state"))


def _restarted(box: Container, restarts: int, old_pid: str) -> dict[str, str] | None:
    unit = box.unit("ActiveState", "NRestarts", "MainPID")
    if unit["ActiveState"] == "active" and int(unit["NRestarts"]) >= restarts and unit["MainPID"] not in (
            "0", old_pid):
        return unit
    return None


def test_the_installed_unit_under_systemd(
        container: tuple[Container, Path], webhook_receiver: WebhookReceiver,
        rtsp_server: Callable[..., RtspServer], tmp_path: Path) -> None:
    box, shared = container
    port = free_port()
    token = _install(box, shared, port)

    # --- Type=notify: active only once READY came, and READY carried the STATUS= line --------------
    unit = box.unit("ActiveState", "SubState", "StatusText", "MainPID", "NRestarts", "WatchdogUSec", "User")
    assert (unit["ActiveState"], unit["SubState"], unit["NRestarts"]) == ("active", "running", "0"), unit
    assert "task(s) running" in unit["StatusText"], unit
    active_since = time.monotonic()
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    # the unit's sandbox is what the agent runs in
    status = box.proc_status(unit["MainPID"])
    agent_uid = box.run("id", "-u", "edge-agent").stdout.strip()
    assert status["Uid"].split()[0] == agent_uid
    assert (status["NoNewPrivs"], status["Seccomp"], status["CapEff"]) == ("1", "2", "0000000000000000"), status
    first_pid = unit["MainPID"]

    api = httpx.Client(base_url=base, headers={"X-Auth-Token": token}, timeout=30)
    # --- a task on a local clip delivers to a webhook; the stores live under StateDirectory ----------
    intrusion_clip(shared / "media" / "walk.mp4", seconds=5.0).chmod(0o644)
    clip_body = intrusion_task(f"{INSIDE}/media/walk.mp4", webhook_receiver.url, name="clip")
    created = api.post("/v2/p1/services/intrusion-detection/tasks", json=clip_body)
    assert created.status_code == 200, created.text
    clip_task = created.json()["tasks"][0]["id"]
    wait_until(lambda: _events_for(webhook_receiver, clip_task) >= 1, WAIT_S, "an event of the clip task")
    stores = box.run("stat", "-c", "%n %U %a", "/var/lib/edge-agent", "/var/lib/edge-agent/tasks.db",
                     "/var/lib/edge-agent/outbox.db").stdout.splitlines()
    assert stores == ["/var/lib/edge-agent edge-agent 700", "/var/lib/edge-agent/tasks.db edge-agent 600",
                      "/var/lib/edge-agent/outbox.db edge-agent 600"], stores

    # --- an RTSP task that must survive the restarts below -------------------------------------------
    camera = rtsp_server(file=intrusion_clip(tmp_path / "camera.mp4", seconds=4.0))
    created = api.post("/v2/p1/services/intrusion-detection/tasks",
                       json=intrusion_task(camera.url, webhook_receiver.url, name="camera"))
    assert created.status_code == 200, created.text
    camera_task = created.json()["tasks"][0]["id"]
    wait_until(lambda: _events_for(webhook_receiver, camera_task) >= 1, WAIT_S, "an event of the camera task")

    # --- the watchdog is fed: still the same process after 2 × WatchdogSec -----------------------------
    watchdog_s = float(unit["WatchdogUSec"].rstrip("s"))
    assert watchdog_s == 30.0, unit
    wait_until(lambda: time.monotonic() - active_since >= 2 * watchdog_s, 3 * watchdog_s, "2 × WatchdogSec",
               interval=1.0)
    unit = box.unit("ActiveState", "MainPID", "NRestarts")
    assert (unit["ActiveState"], unit["MainPID"], unit["NRestarts"]) == ("active", first_pid, "0"), unit

    # --- SIGKILL of the main process: Restart=on-failure, and the camera task resumes ----------------
    before = _events_for(webhook_receiver, camera_task)
    box.run("kill", "-KILL", first_pid)
    unit = wait_until(lambda: _restarted(box, 1, first_pid), WAIT_S, "the restart after SIGKILL", interval=0.5)
    wait_until(lambda: _events_for(webhook_receiver, camera_task) > before, WAIT_S,
               "the camera task's events after the restart")
    assert _task_state(api, camera_task) == "RUNNING"

    # --- a wedged supervisor loop: the watchdog kills the agent and systemd restarts it ---------------
    wheel = _build_stuck_plugin(shared)
    box.run("/opt/edge-agent/venv/bin/python", "-m", "pip", "install", "-q", "--no-deps", str(wheel), timeout=300)
    box.run("systemctl", "restart", UNIT, timeout=60)  # the agent finds plugins at start-up
    unit = box.unit("ActiveState", "MainPID", "NRestarts")
    assert unit["ActiveState"] == "active", unit
    hold = shared / "hold"
    stuck_body = {"name": "stuck", "input": {"type": "url", "data": [{"url": camera.url, "index": 0}]},
                  "output": {"webhook": {"url": webhook_receiver.url, "headers": {"X-Test": "stuck"}}},
                  "config": {"common": {"hold_while": f"{INSIDE}/hold"}}, "service_version": "1.0"}
    created = api.post("/v2/p1/services/stuck-on-start/tasks", json=stuck_body)
    assert created.status_code == 200, created.text
    stuck_task = created.json()["tasks"][0]["id"]
    wait_until(lambda: _task_state(api, stuck_task) == "RUNNING", WAIT_S, "the plugin's task running")
    assert api.put(f"/v2/p1/tasks/{stuck_task}/action/stop").status_code == 200
    wait_until(lambda: _task_state(api, stuck_task) == "STOPPED", WAIT_S, "the plugin's task stopped")
    hold.write_text("")
    # the request returns at once; placing the task checks its config in the supervisor's thread: it hangs
    assert api.put(f"/v2/p1/tasks/{stuck_task}/action/start").status_code == 200
    wedged_pid = unit["MainPID"]
    # 6 missed heartbeats (30 s) make the agent stop its pings; WatchdogSec (30 s) later systemd kills it
    wait_until(lambda: _restarted(box, 2, wedged_pid), 4 * watchdog_s + WAIT_S, "the watchdog restart",
               interval=1.0)
    assert "Watchdog timeout" in box.journal()
    hold.unlink()  # the check may now finish: the restarted agent comes up whole
    wait_until(lambda: _task_state(api, stuck_task) == "RUNNING", WAIT_S, "the once-stuck task running")
    before = _events_for(webhook_receiver, camera_task)
    wait_until(lambda: _events_for(webhook_receiver, camera_task) > before, WAIT_S,
               "the camera task's events after the watchdog restart")

    # --- stop: within TimeoutStopSec, by systemd's own verdict ----------------------------------------
    box.run("systemctl", "stop", UNIT, timeout=60)
    unit = box.unit("ActiveState", "Result")
    assert unit == {"ActiveState": "inactive", "Result": "success"}, unit
    journal = box.journal()
    assert "timed out" not in journal, journal[-3000:]
    api.close()
