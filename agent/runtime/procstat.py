"""CPU time and resident memory of a process, read from /proc (Linux); None where it cannot be read."""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessUsage:
    cpu_seconds: float  # user + system, since the process started
    rss_bytes: int


def usage(pid: int) -> ProcessUsage | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # the command name (field 2) may hold spaces and parentheses: split after its last ')'
            fields = stat.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5), counted from 1
    return ProcessUsage((utime + stime) / _TICKS, resident_pages * _PAGE)
