"""systemd/edge-agent.service: its contract, its exposure score, and the agent running inside its sandbox.

systemd is not PID 1 on a build box, so the unit cannot be started for real. What can be reproduced
exactly is the kernel side of its seccomp settings, which is where a Python/FFmpeg/OpenBLAS stack
would break: the filter below is built from the unit's own SystemCallFilter= lines (expanded by
this machine's ``systemd-analyze syscall-filter``), SystemCallErrorNumber=, SystemCallArchitectures=
native, RestrictAddressFamilies= and MemoryDenyWriteExecute= (the rules of systemd's
seccomp_memory_deny_write_execute()), plus NoNewPrivileges= and UMask=. A launcher installs it and
execs the real ``edge-agent run``, which must then serve, decode RTSP, detect and deliver — and
speak sd_notify to a socket playing systemd.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.agent_process import TOKEN, write_config
from tests.fixtures.ports import free_port
from tests.fixtures.rtsp import RtspServer
from tests.fixtures.webhook import WebhookReceiver
from tests.runtime.scenes import intrusion_clip, intrusion_task

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edge-agent.service"
SYSCALL_HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
WAIT_S = 60.0  # a loaded 2-core box: generous bounds, never a timing assertion


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def exec_start_argv(config: Path) -> list[str]:
    """The unit's ExecStart argv exactly as written, run by this interpreter with a test config.

    Only the installed program's path and the config's path differ: the arguments' order and spelling are
    the unit's (``run --config X`` was once refused by the CLI and the shipped service never started).
    """
    (line,) = unit_settings()["ExecStart"]
    program, *arguments = shlex.split(line)
    assert program == "/opt/edge-agent/venv/bin/edge-agent"
    where = arguments.index("--config") + 1
    assert arguments[where] == "/etc/edge-agent/agent.toml"
    arguments[where] = str(config)
    return [sys.executable, "-m", "agent", *arguments]


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: apt-get install {package}")


def test_unit_contract() -> None:
    unit = unit_settings()
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ExecStart": ["/opt/edge-agent/venv/bin/edge-agent run --config /etc/edge-agent/agent.toml"],
        "WatchdogSec": ["30"],
        "Restart": ["on-failure"],
        "RestartSec": ["5"],
        "TimeoutStopSec": ["15"],
        "User": ["edge-agent"],
        "StateDirectory": ["edge-agent"],
        "StateDirectoryMode": ["0700"],
        "ConfigurationDirectory": ["edge-agent"],
        "UMask": ["0077"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
        "ProtectSystem": ["strict"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "MemoryDenyWriteExecute": ["yes"],
        "SystemCallArchitectures": ["native"],
    }
    assert {key: unit.get(key) for key in expected} == expected
    assert unit["SystemCallFilter"][0] == "@system-service"


def test_unit_security_exposure_stays_low() -> None:
    _require("systemd-analyze", "systemd")
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for edge-agent\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    # 1.2 when written (0 = fully locked down, 10 = unprotected). PrivateNetwork= is impossible for a
    # network agent; a rise above 2 means a protection was dropped.
    assert float(match.group(1)) <= 2.0


# --- The sandbox, built from the unit ---------------------------------------------------------------

@cache
def _syscall_group(name: str) -> frozenset[str]:
    listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            names |= _syscall_group(item) if item.startswith("@") else {item}
    return frozenset(names)


def sandbox_spec() -> dict[str, Any]:
    """The unit's seccomp-relevant settings as the launcher below applies them."""
    _require("systemd-analyze", "systemd")
    if not SYSCALL_HEADER.is_file():
        pytest.fail(f"{SYSCALL_HEADER} is missing: apt-get install linux-libc-dev")
    numbers = {name: int(nr) for name, nr in
               re.findall(r"#define __NR_(\w+)\s+(\d+)", SYSCALL_HEADER.read_text())}
    unit = unit_settings()
    allowed: set[str] = set()
    for index, value in enumerate(unit["SystemCallFilter"]):
        deny = value.startswith("~")
        assert deny == (index > 0), "the unit is written as one allow list, then removals"
        names: set[str] = set()
        for item in value.lstrip("~").split():
            names |= _syscall_group(item) if item.startswith("@") else {item}
        allowed = allowed - names if deny else allowed | names | _syscall_group("@default")
    families = [int(getattr(socket, name)) for name in unit["RestrictAddressFamilies"][0].split()]
    return {
        "allow": sorted(numbers[name] for name in allowed if name in numbers),
        "errno": int(getattr(errno, unit["SystemCallErrorNumber"][0])),
        "families": families,
        "mdwe": unit["MemoryDenyWriteExecute"] == ["yes"],
        "umask": int(unit["UMask"][0], 8),
        "nr": {name: numbers[name] for name in ("mmap", "mprotect", "pkey_mprotect", "shmat", "socket")},
    }


# Runs as: python -c LAUNCHER SPEC_JSON COMMAND... — installs the filter and execs COMMAND, as systemd
# does between fork and exec (so the filter and WATCHDOG_PID belong to the agent's own PID).
LAUNCHER = textwrap.dedent(
    r"""
    import ctypes, json, os, platform, sys
    assert platform.machine() == "x86_64", "the filter is written for x86_64"
    spec = json.loads(sys.argv[1])
    LD, JEQ, JGE, AND, RET = 0x20, 0x15, 0x35, 0x54, 0x06
    ALLOW = 0x7FFF0000
    def fail(code): return 0x00050000 | code
    allow, nr = set(spec["allow"]), spec["nr"]
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, 0xC000003E), (RET, 0, 0, fail(spec["errno"])),  # native only
            (LD, 0, 0, 0), (JGE, 0, 1, 0x40000000), (RET, 0, 0, fail(spec["errno"]))]   # no x32 calls

    def block(number, body):
        if number not in allow:
            return  # refused outright by the default action below
        prog.append((JEQ, 0, len(body), number))
        prog.extend(body)

    def refuse_bits(mask, arg_offset):
        # ld arg (low 32 bits); and mask; == mask -> EPERM, else allow
        return [(LD, 0, 0, arg_offset), (AND, 0, 0, mask), (JEQ, 0, 1, mask),
                (RET, 0, 0, fail(1)), (RET, 0, 0, ALLOW)]

    if spec["mdwe"]:
        block(nr["mmap"], refuse_bits(0x6, 32))            # PROT_WRITE|PROT_EXEC together
        block(nr["mprotect"], refuse_bits(0x4, 32))        # PROT_EXEC added later
        block(nr["pkey_mprotect"], refuse_bits(0x4, 32))
        block(nr["shmat"], refuse_bits(0o100000, 32))      # SHM_EXEC
    families = [(LD, 0, 0, 16)]
    for family in spec["families"]:
        families += [(JEQ, 0, 1, family), (RET, 0, 0, ALLOW)]
    block(nr["socket"], families + [(RET, 0, 0, fail(97))])  # EAFNOSUPPORT, as systemd answers
    for number in sorted(allow):
        prog += [(JEQ, 0, 1, number), (RET, 0, 0, ALLOW)]
    prog.append((RET, 0, 0, fail(spec["errno"])))

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint)]
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]
    insns = (Insn * len(prog))(*[Insn(*i) for i in prog])
    libc = ctypes.CDLL(None, use_errno=True)
    os.umask(spec["umask"])
    assert libc.prctl(38, 1, 0, 0, 0) == 0                                   # NoNewPrivileges=
    if libc.prctl(22, 2, ctypes.byref(Prog(len(prog), insns)), 0, 0) != 0:  # the seccomp filter
        raise OSError(ctypes.get_errno(), "seccomp")
    os.environ["WATCHDOG_PID"] = str(os.getpid())
    os.execv(sys.argv[2], sys.argv[2:])
    """
)

# Proves the filter bites, then runs what the agent and `edge-agent demo` run.
STACK_WORKLOAD = textwrap.dedent(
    r"""
    import ctypes, errno, mmap, os, socket, sys
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("MemoryDenyWriteExecute not in force")
    except PermissionError:
        pass
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
        sys.exit("RestrictAddressFamilies not in force")
    except OSError as exc:
        assert exc.errno == errno.EAFNOSUPPORT, exc
    try:
        os.chroot("/")  # @privileged, removed from the allow list: EPERM even for root
        sys.exit("SystemCallFilter not in force")
    except PermissionError:
        pass
    # glibc asks netlink which address families are configured; refused, it assumes both.
    assert socket.getaddrinfo("localhost", 8080, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)

    import av, cv2, numpy as np
    import fastapi, httpx, paho.mqtt.client, prometheus_client, pydantic, sqlite3, ssl, uvicorn
    a = np.random.default_rng(1).random((400, 400)) + np.eye(400)
    assert np.allclose(np.linalg.inv(a) @ a, np.eye(400))
    path = sys.argv[1]
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(50):
            img = np.zeros((240, 320, 3), np.uint8)
            cv2.rectangle(img, (i * 4, 60), (i * 4 + 40, 120), (255, 255, 255), -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    frames = 0
    with av.open(path) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        for frame in container.decode(video):
            bgr = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
            assert cv2.imencode(".jpg", bgr)[0]
            frames += 1
    ssl.create_default_context()
    sqlite3.connect(os.path.join(os.path.dirname(path), "x.sqlite")).execute("create table t (x)")
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert callback(1) == 2
    print("frames", frames)
    """
)


def sandboxed(command: list[str], spec_path: Path) -> list[str]:
    return [sys.executable, "-c", LAUNCHER, spec_path.read_text(), *command]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sandbox") / "spec.json"
    path.write_text(json.dumps(sandbox_spec()))
    return path


def test_media_stack_runs_in_the_unit_sandbox(spec_file: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    result = subprocess.run(sandboxed([sys.executable, "-c", STACK_WORKLOAD, str(clip)], spec_file),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.split() == ["frames", "50"]
    # UMask=0077: what the service creates is its own.
    assert stat.S_IMODE(clip.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "x.sqlite").stat().st_mode) == 0o600


# --- The real agent in the sandbox, with a socket playing systemd -----------------------------------

class NotifySocket:
    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # AF_UNIX paths: 107 bytes at most
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def wait_for(self, message: str, timeout: float = WAIT_S) -> list[str]:
        """Every datagram up to and including the first that carries ``message``."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            seen.append(data)
            if message in data.split("\n"):
                return seen
        raise AssertionError(f"no {message} from the agent within {timeout} s; got {seen}")

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()



def test_agent_runs_in_the_unit_sandbox_and_speaks_sd_notify(
        spec_file: Path, tmp_path: Path, notify_socket: NotifySocket, webhook_receiver: WebhookReceiver,
        rtsp_server: Callable[..., RtspServer]) -> None:
    camera = rtsp_server(file=intrusion_clip(tmp_path / "walk.mp4", seconds=5.0))
    port = free_port()
    config, state = tmp_path / "agent.toml", tmp_path / "state"
    write_config(config, state, port)
    log = tmp_path / "agent.log"
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "2000000"}
    with log.open("wb") as output:
        agent = subprocess.Popen(
            sandboxed(exec_start_argv(config), spec_file),
            stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        # Type=notify: READY=1 once the API is up; then pings every WatchdogSec/2 while healthy.
        notify_socket.wait_for("READY=1")
        notify_socket.wait_for("WATCHDOG=1")
        notify_socket.wait_for("WATCHDOG=1")
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        with httpx.Client(base_url=base, headers={"X-Auth-Token": TOKEN}, timeout=10) as client:
            body = intrusion_task(camera.url, webhook_receiver.url, name="sandboxed")
            created = client.post("/v2/p1/services/intrusion-detection/tasks", json=body)
            assert created.status_code == 200, created.text
            # RTSP decode, the algorithm, the outbox and the webhook, all under the filter.
            hooks = webhook_receiver.wait_for(1, timeout=WAIT_S)
            assert hooks[0].json["task_id"] == created.json()["tasks"][0]["id"]
            assert "edge_agent_" in client.get("/metrics").text
        agent.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1")
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    text = log.read_text(errors="replace")
    assert "Operation not permitted" not in text, text[-3000:]
    for path in state.rglob("*"):
        # UMask=0077 (StateDirectoryMode=0700 covers the directory itself on a real install).
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
