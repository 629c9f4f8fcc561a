"""Idle memory: the proportional set size (PSS) of an ``edge-agent run`` with N workers and no task.

PSS shares each page among the processes that map it, so the sum over the agent's process tree (main
process, forkserver, workers) is what the agent really costs the box; RSS summed over processes counts
every shared library once per process. Read from /proc/PID/smaps_rollup after the agent is up and the
workers reported ready, a few samples apart; the median is printed with RSS for comparison.

    .venv/bin/python bench/idle_memory.py --workers 1 2 [--samples 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.agent_process import BenchAgent  # noqa: E402
from bench.proctree import process_tree  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

TARGET_MIB = 150.0  # issue 12: idle agent with 2 workers, all processes


def rollup(pid: int) -> dict[str, int]:
    """kB fields of /proc/PID/smaps_rollup (Rss, Pss, …)."""
    fields: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return fields


def workers_up(agent: BenchAgent) -> int:
    return sum(1 for sample in agent.metrics() if sample.name == "edge_agent_worker_up" and sample.value == 1.0)


def measure(workers: int, samples: int, settle_s: float) -> tuple[float, float, int]:
    with BenchAgent(f'[runtime]\nworkers = {workers}\n[log]\nlevel = "WARNING"\n') as agent:
        wait_until(lambda: workers_up(agent) == workers, 60, "the agent's workers", interval=0.2)
        time.sleep(settle_s)
        pss, rss = [], []
        processes = 0
        for _ in range(samples):
            pids = process_tree(agent.pid)
            processes = len(pids)
            rollups = [rollup(pid) for pid in pids]
            pss.append(sum(r.get("Pss", 0) for r in rollups) / 1024)
            rss.append(sum(r.get("Rss", 0) for r in rollups) / 1024)
            time.sleep(1.0)
        return statistics.median(pss), statistics.median(rss), processes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the workers are up")
    args = parser.parse_args()
    print(f"{'workers':>7}  {'processes':>9}  {'PSS MiB':>8}  {'RSS MiB (sum)':>13}  vs target {TARGET_MIB:.0f} MiB")
    for workers in args.workers:
        pss, rss, processes = measure(workers, args.samples, args.settle)
        print(f"{workers:>7}  {processes:>9}  {pss:>8.1f}  {rss:>13.1f}  {pss / TARGET_MIB:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
