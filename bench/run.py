"""``python -m bench.run [--quick] [--workloads W1,W3] [--reps N] [--paths …] [--with litellm]``.

Starts the demo LLM and every path, then for each repetition runs each workload on each path
in turn (the path order rotates between repetitions, so drift on a shared machine hits every
path alike). While one path is measured the others' processes are SIGSTOPped; the load
generator runs in its own process; the runner samples CPU time and RSS of the measured path's
middle processes and of the upstream, and asks the upstream how many streams it saw at once.

Writes ``bench/results/<stamp>.json`` (every figure of every repetition) and ``<stamp>.md``
(medians and paired ratios against direct, targets met or missed), and prints the table.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.loadgen import Group
from bench.others import STANDARD_PATHS
from bench.paths import BenchPath, Rig
from bench.report import render
from bench.sampler import Sampler
from bench.workloads import ORDER, Workload, workloads

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


LOCK = Path(tempfile.gettempdir()) / "remotellm-bench.lock"


@contextmanager
def exclusive(what: str) -> Iterator[None]:
    """One measurement at a time on this machine: two runs on two cores would each measure
    the other (SIGSTOP pauses only a run's own paths). A second run waits, and says so."""
    with LOCK.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"* another benchmark holds {LOCK}; {what} waits for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it


def _only(rig: Rig, path: BenchPath) -> None:
    """Freeze every other path's processes; wake this one and check it answers."""
    for other in rig.paths.values():
        if other is not path:
            other.pause()
    path.resume()
    path.probe()


def run_loadgen(path: BenchPath, workload: Workload, seed_base: int) -> dict[str, Any]:
    spec = {
        "target": {"url": path.url, "key": path.key},
        "groups": [asdict(g) for g in workload.groups],
        "seed_base": seed_base,
    }
    timeout = 120 + sum(g.timeout_s for g in workload.groups) * 4
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--spec", "-"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if not done.stdout.strip():
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure(rig: Rig, path: BenchPath, workload: Workload, seed_base: int) -> dict[str, Any]:
    _only(rig, path)
    rig.reset_upstream_stats()
    roles = {**path.pids(), "upstream": [rig.upstream_pid]}
    sampler = Sampler(roles).start()
    result = run_loadgen(path, workload, seed_base)
    procs = sampler.stop()
    stats = rig.upstream_stats()
    return {
        "loadgen": result,
        "procs": procs,
        "upstream": {k: stats[k] for k in ("peak_streams", "streams_started", "disconnects")},
    }


def warm_up(rig: Rig) -> None:
    """Unmeasured load through every path first: the first requests of a fresh process pay
    for imports, allocator growth and connection pools, which no repetition should carry."""
    shape = Workload("warm-up", "", (Group(concurrency=32, requests=96, tokens=50, gap_ms=1),))
    for n, path in enumerate(rig.paths.values()):
        _only(rig, path)
        run_loadgen(path, shape, seed_base=(n + 1) * 10**8)


def measure_idle(rig: Rig, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path in rig.paths.items():
        if not path.middle:
            continue
        _only(rig, path)
        time.sleep(1.0)  # let the probe's work settle
        sampler = Sampler(path.pids(), interval=0.2).start()
        time.sleep(seconds)
        out[name] = sampler.stop()
    return out


def _progress(rep: int, wl: str, path: str, m: dict[str, Any]) -> str:
    parts = []
    for name, g in m["loadgen"]["groups"].items():
        ttft = g["ttft_p50_ms"]
        parts.append(
            f"{name} {g['ok']}/{g['requests']} exact {g['tokens_per_s']:.0f} tok/s "
            f"ttft50 {ttft if ttft is None else round(ttft, 2)} ms"
            + (f" failures {g['failure_reasons']}" if g["failures"] else "")
        )
    cpu = " ".join(f"{r}={p['cpu_s']:.2f}s" for r, p in m["procs"].items())
    peak = m["upstream"]["peak_streams"]
    return f"  rep {rep + 1} {wl:<4} {path:<10} {'; '.join(parts)} | cpu {cpu} | peak {peak}"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short workloads, 1 repetition")
    ap.add_argument("--workloads", default=",".join(ORDER), help="e.g. W1,W3 (default: all)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3; --quick: 1)")
    ap.add_argument("--with", dest="extra", default="", help="optional paths: litellm")
    ap.add_argument(
        "--paths",
        default=",".join(STANDARD_PATHS),
        help=f"paths besides direct (default {','.join(STANDARD_PATHS)})",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    defined = workloads(args.quick)
    chosen = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in defined]
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; known: {', '.join(ORDER)}")
    reps = args.reps or (1 if args.quick else 3)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    _raise_fd_limit()
    raw: dict[str, Any] = {
        "meta": {
            "stamp": stamp,
            "quick": args.quick,
            "reps": reps,
            "python": sys.version.split()[0],
            "machine": f"{platform.machine()} {platform.system()} {platform.release()}",
            "cpus": _cpus(),
        },
        "workloads": {name: asdict(defined[name]) for name in chosen},
        "runs": {},
        "idle": {},
    }
    with exclusive("this run"), Rig(args.out / f"{stamp}-logs") as rig:
        rig.start_upstream()
        for name in [x for x in f"{args.paths},{args.extra}".split(",") if x]:
            rig.add(name)
        raw["skipped"] = rig.skipped
        for name, why in rig.skipped.items():
            print(f"* skipping {name}: {why}", flush=True)
        print(f"* paths: {', '.join(rig.paths)}; {reps} repetition(s) of {chosen}", flush=True)
        warm_up(rig)
        if "W5" in chosen:
            raw["idle"]["before"] = measure_idle(rig, defined["W5"].idle_s)
        names = list(rig.paths)
        counter = 0
        for rep in range(reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for wl in (w for w in chosen if w != "W5"):
                for name in order:
                    counter += 1
                    m = measure(rig, rig.paths[name], defined[wl], counter * 1_000_000_000)
                    m["rep"] = rep
                    raw["runs"].setdefault(wl, {}).setdefault(name, []).append(m)
                    print(_progress(rep, wl, name, m), flush=True)
        if "W5" in chosen:
            raw["idle"]["after"] = measure_idle(rig, defined["W5"].idle_s)
        for path in rig.paths.values():
            path.resume()
    table = render(raw)
    (args.out / f"{stamp}.json").write_text(json.dumps(raw, indent=1))
    (args.out / f"{stamp}.md").write_text(table)
    print(table)
    print(f"* wrote {args.out / stamp}.json and .md", flush=True)
    return 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
