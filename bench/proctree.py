"""CPU of a process and everything below it: the agent is a main process, a forkserver and its workers."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    """(ppid, CPU seconds of the process and its reaped children) from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return int(fields[1]), (utime + stime + cutime + cstime) / _TICK


def _stats() -> dict[int, tuple[int, float]]:
    return {int(entry): stat for entry in os.listdir("/proc")
            if entry.isdigit() and (stat := _stat(entry)) is not None}


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant (plus the children they reaped)."""
    stats = _stats()
    return sum(stats[pid][1] for pid in process_tree(root) if pid in stats)
