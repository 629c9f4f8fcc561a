"""deploy/install.sh and uninstall.sh run for real into a temporary root, and the unit they install.

One install (twice, to prove idempotence) is shared by the module. It builds a fresh venv and the
package from the source tree, but with ``--pip-arg=--no-deps``: unpacking numpy, OpenCV and PyAV
(~370 MB) into every test run would cost 20–40 s more on a quiet box and minutes on a busy one.
``edge-agent version`` imports no third-party module, so it still proves the installed entry point
on its own; the dependencies are then borrowed from the test interpreter (a .pth file) only to load
the installed config with the installed package. The fixture records what the tests check while
the install is in place, then uninstalls and purges, recording again; the tests assert on those
observations.
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
import sysconfig
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
# The base installation of the interpreter that runs the tests builds the venv.
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
    command_wrapper: tuple[str, int] = ("", 0)
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
    install = (INSTALL, "--root", root, "--skip-apt", "--python", BASE_PYTHON, "--pip-arg=--no-deps")

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
    wrapper = root / "usr/local/bin/edge-agent"
    seen.command_wrapper = (wrapper.read_text(), _mode(wrapper))
    seen.note = (root / "opt/edge-agent/INSTALL-NOTE.txt").read_text()
    # From inside the root: `python -c` puts the working directory first on sys.path, and the
    # checkout's agent/ must not stand in for the installed one.
    seen.version = _run(venv / "bin/edge-agent", "version", timeout=60, cwd=root)
    # Only now (pip must never see the checkout's editable install): the test venv's dependencies,
    # after the installed venv's own site-packages on sys.path.
    (site_packages,) = (venv / "lib").glob("python3*/site-packages")
    (site_packages / "zz-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
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
    (root / "var/lib/edge-agent/tasks.db").write_bytes(b"state")
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


def test_command_on_path_defaults_to_the_installed_config(installed: Observations) -> None:
    text, mode = installed.command_wrapper
    assert mode == 0o755
    # Unprefixed paths: the wrapper is for the box, where the root is /.
    assert ': "${EDGE_AGENT_CONFIG:=/etc/edge-agent/agent.toml}"' in text
    assert 'exec /opt/edge-agent/venv/bin/edge-agent "$@"' in text
    assert "usr/local/bin/edge-agent" not in installed.after_uninstall


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
        "var/lib/edge-agent/tasks.db",
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
    no_python = _run(INSTALL, "--root", tmp_path, "--skip-apt", "--python", tmp_path / "python3")
    assert no_python.returncode != 0
    assert f"no Python interpreter at {tmp_path / 'python3'}" in no_python.stderr
    assert not (tmp_path / "opt/edge-agent/venv").exists()


# --- A real install (no --root) in a private mount namespace ---------------------------------------

# Runs inside `unshare --mount`: /etc, /opt, /var/lib and /usr/local become overlays whose writes land
# in the test's directory, so useradd, chown and the real paths are exercised and the host never
# sees them. /run/systemd is hidden so the script cannot reach a host systemd.
REAL_INSTALL = r"""
set -eu
W=$1; INSTALL=$2; UNINSTALL=$3; PYTHON=$4
for dir in /etc /opt /var/lib /usr/local; do
    mkdir -p "$W/upper$dir" "$W/work$dir"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$W/upper$dir,workdir=$W/work$dir" "$dir"
done
[ ! -d /run/systemd ] || mount -t tmpfs tmpfs /run/systemd
"$INSTALL" --skip-apt --python "$PYTHON" --pip-arg=--no-deps > "$W/install-1.log"
"$INSTALL" --skip-apt --python "$PYTHON" --pip-arg=--no-deps > "$W/install-2.log"
stat -c '%n %U %G %a' /etc/edge-agent /etc/edge-agent/agent.toml /etc/edge-agent/token \
    /var/lib/edge-agent /opt/edge-agent > "$W/owners.txt"
getent passwd edge-agent > "$W/passwd.txt"
cd / && edge-agent version > "$W/version.txt"
"$UNINSTALL" > "$W/uninstall.log"
ls /etc/edge-agent /var/lib/edge-agent > "$W/kept.txt"
getent passwd edge-agent >> "$W/kept.txt"
"$UNINSTALL" --purge >> "$W/uninstall.log"
getent passwd edge-agent > "$W/purged.txt" || echo "no user" > "$W/purged.txt"
ls /etc/edge-agent /var/lib/edge-agent /opt/edge-agent >> "$W/purged.txt" 2>&1 || true
"""


def test_real_install_creates_the_user_and_owns_secrets_and_state(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    if _host_user_exists():
        pytest.skip("the host already has an edge-agent user: useradd would not run")
    host_before = (Path("/opt/edge-agent").exists(), Path("/etc/edge-agent").exists())
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", REAL_INSTALL, "sh",
         str(tmp_path), str(INSTALL), str(UNINSTALL), BASE_PYTHON],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "LC_ALL": "C", "PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "user edge-agent created" in (tmp_path / "install-1.log").read_text()
    second = (tmp_path / "install-2.log").read_text()
    assert "user edge-agent exists" in second
    assert "systemd is not PID 1 here" in second
    assert (tmp_path / "owners.txt").read_text().splitlines() == [
        "/etc/edge-agent root root 755",
        "/etc/edge-agent/agent.toml root edge-agent 640",
        "/etc/edge-agent/token edge-agent edge-agent 600",
        "/var/lib/edge-agent edge-agent edge-agent 700",
        "/opt/edge-agent root root 755",
    ]
    assert ":/usr/sbin/nologin" in (tmp_path / "passwd.txt").read_text()
    assert (tmp_path / "version.txt").read_text().strip() == f"edge-agent {agent.__version__}"
    kept = (tmp_path / "kept.txt").read_text()
    assert "agent.toml" in kept and "token" in kept and "edge-agent:" in kept
    purged = (tmp_path / "purged.txt").read_text()
    assert purged.startswith("no user")
    assert purged.count("No such file or directory") == 3
    # The namespace is gone and the host never saw any of it.
    assert (Path("/opt/edge-agent").exists(), Path("/etc/edge-agent").exists()) == host_before
    assert not _host_user_exists()
