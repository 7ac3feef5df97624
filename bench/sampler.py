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
_COUNTERS = ("cpu", "sys", "sched", "wakeups")


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _sys(proc: psutil.Process) -> float:
    return float(proc.cpu_times().system)


def _wakeups(proc: psutil.Process) -> float:
    """Voluntary context switches: each is the process going to sleep (an event loop
    blocking in epoll_wait), so the count is its wake-ups."""
    return float(proc.num_ctx_switches().voluntary)


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
        self._start: dict[tuple[str, str], float] = {}
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
                elif measure == "sys":
                    total += _sys(proc)
                elif measure == "wakeups":
                    total += _wakeups(proc)
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
        self._start = {
            (role, measure): self._sum(role, measure)
            for role in self._procs
            for measure in _COUNTERS
        }
        self._sample_rss()
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        """Per role: ``cpu_s`` (``cpu_sys_s`` of it in the kernel), ``sched_cpu_s``,
        ``cpu_pct``/``sched_cpu_pct`` (of one core), ``wakeups``, ``rss_peak_mb``,
        ``rss_end_mb``, ``wall_s``."""
        wall = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._sample_rss()
        out: dict[str, dict[str, float]] = {}
        for role in self._procs:
            delta = {m: self._sum(role, m) - self._start[role, m] for m in _COUNTERS}
            cpu, sched = delta["cpu"], delta["sched"]
            out[role] = {
                "cpu_s": cpu,
                "cpu_sys_s": delta["sys"],
                "wakeups": delta["wakeups"],
                "sched_cpu_s": sched,
                "cpu_pct": 100 * cpu / wall if wall > 0 else 0.0,
                "sched_cpu_pct": 100 * sched / wall if wall > 0 else 0.0,
                "rss_peak_mb": self._peak[role] / _MB,
                "rss_end_mb": self._last[role] / _MB,
                "wall_s": wall,
            }
        return out
