"""Which figure each workload is judged on, and the issue's target for it.

A ``Metric`` reads one number from one measured run (a path's repetition of a workload); the
report takes medians and pairs them with direct. ``compare`` says how: ``"delta"`` (added ms),
``"ratio"`` (x direct) or None (the value itself, e.g. relay CPU per token, which the direct
path does not have). Targets are judged on remotellm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["IDLE_METRICS", "METRICS", "Metric"]

Run = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    label: str
    value: Callable[[Run], float | None]
    compare: Literal["delta", "ratio"] | None = None
    target: tuple[Literal["<=", ">="], float] | None = None
    #: Set the row against the peers (best peer, remotellm ahead or not).
    peers: bool = False
    higher_is_better: bool | None = None
    """None: from the target (``>=``) or the comparison (a ratio), else lower is better."""

    @property
    def higher_better(self) -> bool:
        if self.higher_is_better is not None:
            return self.higher_is_better
        return (self.target is not None and self.target[0] == ">=") or self.compare == "ratio"


def _g(key: str, group: str = "main") -> Callable[[Run], float | None]:
    def read(run: Run) -> float | None:
        value = run["loadgen"]["groups"][group].get(key)  # older results lack newer keys
        return None if value is None else float(value)

    return read


def _failures(run: Run) -> float:
    return float(sum(g["failures"] for g in run["loadgen"]["groups"].values()))


def _middle(run: Run) -> dict[str, dict[str, float]]:
    return {role: p for role, p in run["procs"].items() if role != "upstream"}


def _cpu_per_token_us(run: Run) -> float | None:
    middle = _middle(run)
    tokens = sum(g["tokens"] for g in run["loadgen"]["groups"].values())
    if not middle or not tokens:
        return None
    return 1e6 * sum(float(p["cpu_s"]) for p in middle.values()) / float(tokens)


def _per_token(key: str, scale: float = 1.0) -> Callable[[Run], float | None]:
    def read(run: Run) -> float | None:
        middle = _middle(run)
        tokens = sum(g["tokens"] for g in run["loadgen"]["groups"].values())
        if not middle or not tokens:
            return None
        return scale * sum(float(p.get(key, 0.0)) for p in middle.values()) / float(tokens)

    return read


def _kernel_share(run: Run) -> float | None:
    middle = _middle(run)
    cpu = sum(float(p["cpu_s"]) for p in middle.values())
    if not middle or not cpu:
        return None
    return 100 * sum(float(p.get("cpu_sys_s", 0.0)) for p in middle.values()) / cpu


def _rss_peak_mb(run: Run) -> float | None:
    middle = _middle(run)
    return sum(p["rss_peak_mb"] for p in middle.values()) if middle else None


def _peak_streams(run: Run) -> float:
    return float(run["upstream"]["peak_streams"])


def _silence_s(run: Run) -> float | None:
    ms = run["loadgen"]["groups"]["main"]["max_silence_ms"]
    return None if ms is None else float(ms) / 1000


def _client_cpu_pct(run: Run) -> float:
    lg = run["loadgen"]
    return 100 * float(lg["client_cpu_s"]) / float(lg["wall_s"])


_FAIL = Metric("failures (any inexact stream counts)", _failures, target=("<=", 0))
_CPU = Metric("relay CPU per token (µs)", _cpu_per_token_us)
_CLIENT = Metric("client CPU (% of a core)", _client_cpu_pct)
_WAKE = Metric("relay wake-ups per token", _per_token("wakeups"))
_READS = Metric("client reads per token (< 1: coalesced)", _g("reads_per_token"))
_KERNEL = Metric("relay CPU in the kernel (%)", _kernel_share)

METRICS: dict[str, tuple[Metric, ...]] = {
    "W1": (
        _FAIL,
        Metric("TTFT p50 (ms)", _g("ttft_p50_ms"), "delta", ("<=", 1.5), peers=True),
        Metric("TTFT p99 (ms)", _g("ttft_p99_ms"), "delta", ("<=", 3), peers=True),
        Metric("tokens/s", _g("tokens_per_s"), "ratio", (">=", 0.7), peers=True),
        _CPU,
        _CLIENT,
    ),
    "W2": (
        _FAIL,
        Metric("tokens/s", _g("tokens_per_s"), "ratio", (">=", 0.9), peers=True),
        Metric("relay CPU per token (µs)", _cpu_per_token_us, target=("<=", 6), peers=True),
        Metric("TTFT p50 (ms)", _g("ttft_p50_ms"), "delta"),
        Metric("upstream streams at once", _peak_streams, higher_is_better=True),
        _READS,
        _WAKE,
        _KERNEL,
        _CLIENT,
    ),
    "W3": (
        _FAIL,
        Metric("upstream streams at once", _peak_streams, target=(">=", 300)),
        Metric("gap p99 (ms)", _g("gap_p99_ms"), "delta", ("<=", 6)),
        Metric("TTFT p50 (ms)", _g("ttft_p50_ms"), "delta", ("<=", 5)),
        Metric("TTFT p99 (ms)", _g("ttft_p99_ms"), "delta"),
        _CPU,
        _READS,
        _WAKE,
        _KERNEL,
        _CLIENT,
    ),
    "W3L": (
        _FAIL,
        Metric("upstream streams at once", _peak_streams, target=(">=", 1000)),
        Metric("gap p99 (ms)", _g("gap_p99_ms"), "delta", ("<=", 15), peers=True),
        Metric("TTFT p50 (ms)", _g("ttft_p50_ms"), "delta", ("<=", 5), peers=True),
        Metric("TTFT p99 (ms)", _g("ttft_p99_ms"), "delta", ("<=", 50)),
        Metric("relay CPU per token (µs)", _cpu_per_token_us, target=("<=", 45), peers=True),
        Metric("relay peak RSS (MB)", _rss_peak_mb, target=("<=", 120), peers=True),
        _READS,
        _WAKE,
        _KERNEL,
        _CLIENT,
    ),
    "W4": (
        _FAIL,
        # 15 s between keep-alives, plus 0.5 s for timer and scheduling slack on a busy machine
        Metric("longest silence before token 1 (s)", _silence_s, target=("<=", 15.5)),
        Metric("TTFT p50 (ms)", _g("ttft_p50_ms"), "delta"),
    ),
    "W6": (
        _FAIL,
        Metric("big bodies bytes/s", _g("bytes_per_s", "big"), "ratio", (">=", 0.5), peers=True),
        Metric(
            "ordinary streams gap p99 (ms)",
            _g("gap_p99_ms", "ordinary"),
            "delta",
            ("<=", 10),
            peers=True,
        ),
        Metric("relay peak RSS (MB)", _rss_peak_mb, peers=True),
    ),
}


def _idle(role: str | None, key: str, when: str = "before") -> Callable[[Run], float | None]:
    def read(idle: Run) -> float | None:
        procs = idle.get(when)
        if not procs:
            return None
        if role is None:
            return float(sum(p[key] for p in procs.values()))
        return float(procs[role][key]) if role in procs else None

    return read


def _growth(idle: Run) -> float | None:
    before, after = idle.get("before"), idle.get("after")
    if not before or not after:
        return None
    return max(
        float(after[r]["rss_end_mb"]) / float(before[r]["rss_end_mb"]) for r in before if r in after
    )


IDLE_METRICS: tuple[Metric, ...] = (
    Metric("connector RSS idle (MB)", _idle("connector", "rss_end_mb"), target=("<=", 30)),
    Metric("broker RSS idle (MB)", _idle("broker", "rss_end_mb"), target=("<=", 40)),
    Metric("middle RSS idle, all processes (MB)", _idle(None, "rss_end_mb"), peers=True),
    Metric("CPU idle (% of a core, all middle)", _idle(None, "sched_cpu_pct"), target=("<=", 0.05)),
    Metric("RSS after the load / idle (worst process)", _growth, target=("<=", 1.5)),
)
