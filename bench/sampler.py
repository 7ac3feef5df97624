"""CPU time and peak RSS of the processes in the middle, while a workload runs.

CPU is the difference of ``cpu_times`` (user + system) between start and
stop, so it is exact whatever the sampling period; RSS is sampled every ``interval`` seconds
from a thread of the runner (not of the client), and the peak kept. RSS is the sum over a
role's processes (an sshd forwards in a child).

``cpu_s`` comes from psutil (clock ticks: 10 ms resolution, and it keeps the time of threads
that have exited); ``sched_cpu_s`` from ``/proc/<pid>/task/*/schedstat`` (nanoseconds, live
threads only), which is what W5 needs: 0.05 % of a core over 30 s is 15 ms, under two ticks.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]

__all__ = ["Sampler"]

_MB = 1024 * 1024


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _sched_cpu(pid: int) -> float:
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


class Sampler:
    def __init__(self, roles: dict[str, list[int]], interval: float = 0.05) -> None:
        self._procs: dict[str, list[psutil.Process]] = {}
        for role, pids in roles.items():
            alive = []
            for pid in pids:
                try:
                    alive.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    continue
            self._procs[role] = alive
        self._interval = interval
        self._cpu0: dict[str, float] = {}
        self._sched0: dict[str, float] = {}
        self._peak: dict[str, int] = dict.fromkeys(roles, 0)
        self._last: dict[str, int] = dict.fromkeys(roles, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = 0.0

    def _sum(self, role: str, measure: str) -> float:
        total = 0.0
        for proc in self._procs[role]:
            try:
                if measure == "cpu":
                    total += _cpu(proc)
                elif measure == "sched":
                    total += _sched_cpu(proc.pid)
                else:
                    total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _sample_rss(self) -> None:
        for role in self._procs:
            rss = int(self._sum(role, "rss"))
            self._last[role] = rss
            self._peak[role] = max(self._peak[role], rss)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample_rss()

    def start(self) -> Sampler:
        self._cpu0 = {role: self._sum(role, "cpu") for role in self._procs}
        self._sched0 = {role: self._sum(role, "sched") for role in self._procs}
        self._sample_rss()
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        """Per role: ``cpu_s``/``sched_cpu_s``, ``cpu_pct``/``sched_cpu_pct`` (of one core),
        ``rss_peak_mb``, ``rss_end_mb``, ``wall_s``."""
        wall = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._sample_rss()
        out: dict[str, dict[str, float]] = {}
        for role in self._procs:
            cpu = self._sum(role, "cpu") - self._cpu0[role]
            sched = self._sum(role, "sched") - self._sched0[role]
            out[role] = {
                "cpu_s": cpu,
                "sched_cpu_s": sched,
                "cpu_pct": 100 * cpu / wall if wall > 0 else 0.0,
                "sched_cpu_pct": 100 * sched / wall if wall > 0 else 0.0,
                "rss_peak_mb": self._peak[role] / _MB,
                "rss_end_mb": self._last[role] / _MB,
                "wall_s": wall,
            }
        return out
