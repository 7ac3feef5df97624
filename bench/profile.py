"""``python -m bench.profile [--workload W2] [--quick]``: where the relay spends its CPU.

Starts the demo LLM, the broker and the connector as ``bench.run`` does, attaches ``py-spy
record`` to the broker and to the connector, applies one workload through the relay, and
prints for each process: CPU share per layer (our packages, aiohttp, websockets, asyncio …,
by the innermost Python frame), the functions with the most *self* time, and the functions
of our own packages with the most *inclusive* time (callees included). Percentages are of
the samples in which the process was on CPU (py-spy drops idle samples).

Needs py-spy (``hatch run bench:python -m pip install py-spy``) and ptrace permission.
``--syscalls`` attaches ``strace -f -c`` instead and reports system calls per relayed token.
Raw collapsed stacks are kept next to the report for flamegraph.pl or speedscope.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.paths import Rig
from bench.run import RESULTS, _raise_fd_limit, exclusive, run_loadgen
from bench.workloads import workloads

__all__ = ["main", "summarise_stacks"]

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
_POLL = ("EpollSelector.select", "select", "poll")
_OURS = ("remotellm_broker", "remotellm_connector", "remotellm_protocol")
_LAYERS = (
    *_OURS,
    "aiohttp",
    "websockets",
    "msgspec",
    "structlog",
    "prometheus_client",
    "yarl",
    "multidict",
    "uvloop",
    "asyncio",
    "logging",
)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return path


def _frame(raw: str) -> tuple[str, str]:
    m = _FRAME.match(raw)
    if m is None:
        return raw, ""
    return m["name"], _short(m["file"])


def _layer(file: str) -> str:
    for layer in _LAYERS:
        if file.startswith(layer + "/") or file.startswith(layer + "."):
            return layer
    return "other stdlib / native" if file else "native / unknown"


def summarise_stacks(text: str, top: int = 20) -> str:
    """Markdown tables from py-spy's raw (collapsed) output."""
    total = 0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        name, file = frames[-1]
        self_time[f"{name} ({file})"] += count
        layers[_layer(file)] += count
        for label in {f"{n} ({f})" for n, f in frames if f.startswith(_OURS)}:
            inclusive[label] += count
    if not total:
        return "no samples (was the process idle, or ptrace refused?)\n"
    polling = sum(v for k, v in self_time.items() if k.split(" ", 1)[0] in _POLL)
    busy = max(total - polling, 1)

    def table(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"| {title} | % of samples | % excl. epoll |", "|---|---|---|"]
        rows += [
            f"| `{k}` | {100 * v / total:.1f} | "
            + ("-" if k.split(" ", 1)[0] in _POLL else f"{100 * v / busy:.1f}")
            + " |"
            for k, v in counts.most_common(top)
        ]
        return [*rows, ""]

    return "\n".join(
        [
            f"{total} samples not idle; {100 * polling / total:.0f} % of them in epoll: py-spy "
            "counts a runnable thread as active, so on a saturated machine those are mostly "
            "'woken, waiting for a core' (plus the kernel's epoll work). The last column "
            "leaves them out.",
            "",
            *table("layer (innermost frame)", layers),
            *table("function (self time)", self_time),
            *table("our function (inclusive time)", inclusive),
        ]
    )


def _strace(pid: int, out: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("strace") or "strace"
    return subprocess.Popen(
        [exe, "-f", "-c", "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def syscalls_per_token(text: str, tokens: int) -> str:
    """strace -c's table as calls per relayed token (the counts are exact; strace's own
    overhead makes its times meaningless, so they are left out)."""
    rows = ["| syscall | calls | per token |", "|---|---|---|"]
    total = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls = int(parts[3])
            total += calls
            rows.append(f"| `{parts[-1]}` | {calls} | {calls / max(tokens, 1):.2f} |")
    rows.append(f"| all | {total} | {total / max(tokens, 1):.2f} |")
    return "\n".join(rows) + "\n"


def _record(pid: int, out: Path, rate: int, native: bool) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    argv += ["--output", str(out), *(["--native"] if native else [])]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", default="W2", help="W1..W6 except W5 (default W2)")
    ap.add_argument("--quick", action="store_true", help="the workload's quick size")
    ap.add_argument("--rate", type=int, default=200, help="samples per second")
    ap.add_argument("--native", action="store_true", help="include C frames (slower)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--path", default="remotellm", help="remotellm or a variant of it")
    ap.add_argument(
        "--syscalls", action="store_true", help="count system calls (strace -c) instead"
    )
    args = ap.parse_args(argv)
    workload = workloads(args.quick)[args.workload.upper()]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    _raise_fd_limit()
    report = [f"# relay profile, {workload.name}: {workload.title}", ""]
    with exclusive("this profile"), Rig(RESULTS / f"{stamp}-profile-logs") as rig:
        rig.start_upstream()
        rig.add(args.path)
        path = rig.paths[args.path]
        path.probe()
        outs = {
            p.role: RESULTS / f"{stamp}-profile-{workload.name}-{p.role}.txt" for p in path.middle
        }
        spies = {
            p.role: _strace(p.pid, outs[p.role])
            if args.syscalls
            else _record(p.pid, outs[p.role], args.rate, args.native)
            for p in path.middle
        }
        time.sleep(1.0)  # py-spy attaches
        result = run_loadgen(path, workload, seed_base=7 * 10**9)
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for role, spy in spies.items():
            _, err = spy.communicate(timeout=60)
            if not outs[role].exists():
                raise SystemExit(f"py-spy wrote nothing for {role}: {err.decode()[-1000:]}")
    for name, g in result["groups"].items():
        report.append(
            f"Load: {name}: {g['ok']}/{g['requests']} exact, {g['tokens_per_s']:.0f} tokens/s, "
            f"TTFT p50 {g['ttft_p50_ms']:.2f} ms, gap p99 {g['gap_p99_ms'] or 0:.2f} ms."
        )
    tokens = sum(g["tokens"] for g in result["groups"].values())
    for role, out in outs.items():
        text = out.read_text()
        summary = (
            syscalls_per_token(text, tokens) if args.syscalls else summarise_stacks(text, args.top)
        )
        report += ["", f"## {role}", "", summary]
    text = "\n".join(report)
    md = RESULTS / f"{stamp}-profile-{workload.name}.md"
    md.write_text(text)
    print(text)
    print(f"* wrote {md} (raw stacks: {', '.join(str(o) for o in outs.values())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
