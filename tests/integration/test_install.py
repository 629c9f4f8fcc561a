"""deploy/install.sh and uninstall.sh run for real into a temporary root, and the unit they install.

One install (twice, to prove idempotence) is shared by the module: a fresh venv with every
dependency takes 20–40 s. The fixture records what the tests check while the install is in place,
then uninstalls and purges, recording again; the tests assert on those observations.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import agent

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
UNINSTALL = REPO / "deploy" / "uninstall.sh"
UNIT_SOURCE = REPO / "systemd" / "edge-agent.service"
CONFIG_TEMPLATE = REPO / "deploy" / "agent.toml"
HOST_UNIT = Path("/etc/systemd/system/edge-agent.service")
# The interpreter that runs the tests: its base installation builds the venv (the venv is not
# reused, so the install proves the dependencies resolve from pyproject.toml).
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _host_user_exists() -> bool:
    try:
        pwd.getpwnam("edge-agent")
    except KeyError:
        return False
    return True


def _run(*args: str | Path, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


@dataclass
class Observations:
    root: Path
    runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    token_first: str = ""
    token_second: str = ""
    config_after_second: str = ""
    modes: dict[str, int] = field(default_factory=dict)
    installed_unit: str = ""
    note: str = ""
    version: subprocess.CompletedProcess[str] | None = None
    agent_location: str = ""
    settings_seen: dict[str, str] = field(default_factory=dict)
    verify: subprocess.CompletedProcess[str] | None = None
    after_uninstall: set[str] = field(default_factory=set)
    after_purge: set[str] = field(default_factory=set)
    uninstall_runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir()}


def _verify_unit(root: Path) -> subprocess.CompletedProcess[str]:
    # verify follows the unit's dependencies (multi-user.target, sysinit.target …): give the
    # staged root the distribution's units so only ours is under test.
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    try:
        return _run("systemd-analyze", "verify", f"--root={root}", "edge-agent.service")
    finally:
        shutil.rmtree(root / "usr")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Observations:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    assert CONFIG_TEMPLATE.is_file(), "deploy/agent.toml (the config template) is missing"
    user_before, unit_before = _host_user_exists(), HOST_UNIT.exists()
    seen = Observations(root=tmp_path_factory.mktemp("install-root"))
    root = seen.root
    etc = root / "etc/edge-agent"
    venv = root / "opt/edge-agent/venv"
    install = (INSTALL, "--root", root, "--skip-apt", "--python", BASE_PYTHON)

    seen.runs.append(_run(*install))
    assert seen.runs[0].returncode == 0, seen.runs[0].stderr
    seen.token_first = (etc / "token").read_text()
    with (etc / "agent.toml").open("a") as config:
        config.write("\n# operator's edit: must survive a re-install\n")
    seen.runs.append(_run(*install))
    assert seen.runs[1].returncode == 0, seen.runs[1].stderr
    seen.token_second = (etc / "token").read_text()
    seen.config_after_second = (etc / "agent.toml").read_text()

    for name in ("etc/edge-agent", "etc/edge-agent/agent.toml", "etc/edge-agent/token",
                 "var/lib/edge-agent", "opt/edge-agent", "etc/systemd/system/edge-agent.service"):
        seen.modes[name] = _mode(root / name)
    seen.installed_unit = (root / "etc/systemd/system/edge-agent.service").read_text()
    seen.note = (root / "opt/edge-agent/INSTALL-NOTE.txt").read_text()
    # From inside the root: `python -c` puts the working directory first on sys.path, and the
    # checkout's agent/ must not stand in for the installed one.
    seen.version = _run(venv / "bin/edge-agent", "version", timeout=60, cwd=root)
    probe = textwrap.dedent(
        """
        import json, sys, agent
        from agent.settings import load_settings
        s = load_settings(sys.argv[1])
        print(json.dumps({"agent": agent.__file__, "state_dir": str(s.state_dir),
                          "token_file": str(s.api.token_file)}))
        """
    )
    loaded = _run(venv / "bin/python", "-c", probe, etc / "agent.toml", timeout=60, cwd=root)
    assert loaded.returncode == 0, loaded.stderr
    facts = json.loads(loaded.stdout)
    seen.agent_location = facts.pop("agent")
    seen.settings_seen = facts
    seen.verify = _verify_unit(root)

    # Nothing may have leaked onto the host.
    assert _host_user_exists() == user_before
    assert HOST_UNIT.exists() == unit_before

    # Stands in for the task store and outbox the agent would have written.
    (root / "var/lib/edge-agent/tasks.sqlite").write_bytes(b"state")
    seen.uninstall_runs.append(_run(UNINSTALL, "--root", root))
    seen.after_uninstall = _tree(root)
    seen.uninstall_runs.append(_run(UNINSTALL, "--root", root, "--purge"))
    seen.after_purge = _tree(root)
    return seen


def test_install_succeeds_and_says_what_it_skipped(installed: Observations) -> None:
    first, second = installed.runs
    assert "creating venv" in first.stdout
    assert "reusing venv" in second.stdout
    assert "agent.toml installed" in first.stdout
    assert "token" in first.stdout and "generated" in first.stdout
    # --root must never touch the host: the skipped steps are written down instead.
    assert "useradd --system edge-agent" in installed.note
    assert "systemctl daemon-reload && systemctl enable --now edge-agent" in installed.note


def test_second_run_keeps_token_and_config(installed: Observations) -> None:
    assert installed.token_first == installed.token_second
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}\n", installed.token_first)
    assert installed.config_after_second.startswith(CONFIG_TEMPLATE.read_text())
    assert "operator's edit" in installed.config_after_second
    second = installed.runs[1].stdout
    assert "agent.toml kept" in second
    assert "token" in second and "kept" in second


def test_modes_protect_secrets_and_state(installed: Observations) -> None:
    assert installed.modes == {
        "etc/edge-agent": 0o755,
        "etc/edge-agent/agent.toml": 0o640,
        "etc/edge-agent/token": 0o600,
        "var/lib/edge-agent": 0o700,
        "opt/edge-agent": 0o755,
        "etc/systemd/system/edge-agent.service": 0o644,
    }


def test_installed_unit_is_the_repository_unit(installed: Observations) -> None:
    assert installed.installed_unit == UNIT_SOURCE.read_text()


def test_entry_point_of_the_installed_venv_runs(installed: Observations) -> None:
    assert installed.version is not None
    assert installed.version.returncode == 0, installed.version.stderr
    assert installed.version.stdout.strip() == f"edge-agent {agent.__version__}"
    # The installed copy answered, not the editable checkout the tests run from.
    assert installed.agent_location.startswith(str(installed.root / "opt/edge-agent/venv/lib"))


def test_installed_config_matches_the_unit(installed: Observations) -> None:
    # StateDirectory=edge-agent and the token install.sh writes are what the config points at.
    assert installed.settings_seen == {
        "state_dir": "/var/lib/edge-agent",
        "token_file": "/etc/edge-agent/token",
    }


def test_systemd_verifies_the_installed_unit(installed: Observations) -> None:
    assert installed.verify is not None
    # verify checks ExecStart= exists in the root and reports every unknown or malformed key.
    assert installed.verify.returncode == 0, installed.verify.stderr
    assert installed.verify.stderr.strip() == ""


def test_uninstall_keeps_config_and_state_purge_removes_them(installed: Observations) -> None:
    assert [run.returncode for run in installed.uninstall_runs] == [0, 0]
    assert installed.after_uninstall == {
        "etc/edge-agent/agent.toml",
        "etc/edge-agent/token",
        "var/lib/edge-agent/tasks.sqlite",
    }
    assert installed.after_purge == set()
    assert not (installed.root / "var/lib/edge-agent").exists()
    assert not (installed.root / "etc/edge-agent").exists()


def test_install_refuses_unknown_options_and_missing_sources(tmp_path: Path) -> None:
    unknown = _run(INSTALL, "--root", tmp_path, "--frobnicate")
    assert unknown.returncode != 0
    assert "unknown option: --frobnicate" in unknown.stderr
    missing = _run(INSTALL, "--root", tmp_path, "--skip-apt", "--wheel", tmp_path / "nope.whl")
    assert missing.returncode != 0
    assert "wheel not found" in missing.stderr
    assert not (tmp_path / "opt/edge-agent/venv").exists()


# --- The unit's sandbox ---------------------------------------------------------------------------

def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT_SOURCE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_contract() -> None:
    unit = _unit_settings()
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ExecStart": ["/opt/edge-agent/venv/bin/edge-agent run --config /etc/edge-agent/agent.toml"],
        "WatchdogSec": ["30"],
        "Restart": ["on-failure"],
        "User": ["edge-agent"],
        "StateDirectory": ["edge-agent"],
        "StateDirectoryMode": ["0700"],
        "ConfigurationDirectory": ["edge-agent"],
        "UMask": ["0077"],
        "CapabilityBoundingSet": [""],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "MemoryDenyWriteExecute": ["yes"],
    }
    assert {key: unit.get(key) for key in expected} == expected


def test_unit_security_exposure_stays_low() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    result = _run("systemd-analyze", "security", "--offline=yes", "--no-pager", UNIT_SOURCE, timeout=60)
    match = re.search(r"Overall exposure level for edge-agent\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    # 1.2 when written (0 = fully locked down, 10 = unprotected); PrivateNetwork= is impossible
    # for a network agent, so a rise above 2 means a protection was dropped.
    assert float(match.group(1)) <= 2.0


# systemd's MemoryDenyWriteExecute=yes, as the seccomp rules of systemd 252 install it: mmap with
# PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC and shmat with SHM_EXEC fail EPERM.
# The child installs the filter, proves it is active, then runs what the agent runs.
W_X_WORKLOAD = textwrap.dedent(
    r"""
    import ctypes, mmap, platform, sys
    assert platform.machine() == "x86_64", "the filter below is written for x86_64"

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    LD, JEQ, AND, RET = 0x20, 0x15, 0x54, 0x06
    ALLOW, DENY = 0x7FFF0000, 0x00050000 | 1
    program = [
        (LD, 0, 0, 4), (JEQ, 0, 16, 0xC000003E),               # foreign arch -> allow
        (LD, 0, 0, 0),
        (JEQ, 4, 0, 9), (JEQ, 6, 0, 10), (JEQ, 5, 0, 329), (JEQ, 7, 0, 30),
        (RET, 0, 0, ALLOW),
        (LD, 0, 0, 32), (AND, 0, 0, 6), (JEQ, 6, 7, 6),         # mmap: W and X
        (LD, 0, 0, 32), (AND, 0, 0, 4), (JEQ, 3, 4, 4),         # mprotect: X
        (LD, 0, 0, 32), (AND, 0, 0, 0x8000), (JEQ, 0, 1, 0x8000),  # shmat: SHM_EXEC
        (RET, 0, 0, DENY), (RET, 0, 0, ALLOW),
    ]
    insns = (Insn * len(program))(*[Insn(*i) for i in program])
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0                      # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(Prog(len(program), insns)), 0, 0) == 0  # SECCOMP_MODE_FILTER
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("filter not active")
    except PermissionError:
        pass

    import av, cv2, numpy as np
    import fastapi, httpx, paho.mqtt.client, prometheus_client, pydantic, sqlite3, ssl, uvicorn
    a = np.random.default_rng(1).random((400, 400))
    assert np.allclose(np.linalg.inv(a + np.eye(400)) @ (a + np.eye(400)), np.eye(400))
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
    sqlite3.connect(":memory:").execute("select 1")
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert callback(1) == 2
    print("frames", frames)
    """
)


def test_media_stack_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    assert _unit_settings()["MemoryDenyWriteExecute"] == ["yes"]
    result = subprocess.run(
        [sys.executable, "-c", W_X_WORKLOAD, str(tmp_path / "clip.mp4")],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["frames", "50"]
