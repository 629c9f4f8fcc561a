"""The state directory: writable and with room for the outbox; and whether diag may open a store in it.

diag opens a store only as the user who owns it: SQLite creates WAL and journal files as whoever opens
the database, and root-owned ones left by ``sudo edge-agent diag`` would lock the agent out of its own
stores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from agent.diag.report import Check, Level, masked_check
from agent.settings import AgentSettings

GIB = 1 << 30
MIB = 1 << 20
FREE_DISK_FAIL = 100 * MIB
FREE_DISK_WARN = 1 * GIB


def check_state_dir(settings: AgentSettings) -> Check:
    state = settings.state_dir
    if not state.exists():
        return masked_check("state", "state dir", Level.WARN, f"{state} does not exist yet",
                            "The agent creates it at its first start; systemd's StateDirectory= does too.",
                            path=str(state))
    try:
        with tempfile.NamedTemporaryFile(dir=state, prefix=".diag-"):
            pass
    except OSError as exc:
        return masked_check("state", "state dir", Level.FAIL, f"{state} is not writable: {exc.strerror}",
                            f"Run diag as the agent's user (sudo -u {_owner_name(state)} edge-agent diag), or fix "
                            "the directory's owner.", path=str(state))
    free = shutil.disk_usage(state).free
    detail = f"{state}: writable, {free / GIB:.1f} GiB free"
    data: dict[str, Any] = {"path": str(state), "free_bytes": free}
    if free < FREE_DISK_FAIL:
        return masked_check("state", "state dir", Level.FAIL, detail,
                            "Free disk space: the outbox cannot commit events on a full disk.", **data)
    if free < min(FREE_DISK_WARN, settings.outbox.max_bytes):
        return masked_check("state", "state dir", Level.WARN, detail,
                            "Less free space than the outbox may use (outbox.max_bytes); free some or lower it.",
                            **data)
    return masked_check("state", "state dir", Level.OK, detail, **data)


def _owner_name(path: Path) -> str:
    try:
        import pwd

        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError, ImportError):
        return "edge-agent"


def store_access(settings: AgentSettings, name: str) -> tuple[Path | None, Check | None]:
    """The store file if diag may open it (it exists and this user owns it), else the finding, if any."""
    path = settings.state_dir / name
    if not path.is_file():
        return None, None
    try:
        owner_uid = path.stat().st_uid
    except OSError as exc:
        return None, masked_check("state", name, Level.FAIL, f"cannot read {path}: {exc.strerror}",
                                  "Run diag as the agent's user.")
    if owner_uid != os.geteuid():
        user = _owner_name(path)
        return None, masked_check("state", name, Level.WARN,
                                  f"{path} belongs to {user}; not opened as another user",
                                  f"Run diag as the agent's user: sudo -u {user} edge-agent diag")
    return path, None
