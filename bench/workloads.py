"""W1..W6 from issue 7: what each workload sends, in its full and its ``--quick`` size.

The quick sizes keep every workload's shape (concurrency, cadence) and cut only its length, so
a quick run still exercises what the full one measures; W4's prefill stays above the broker's
15 s keep-alive period so a keep-alive comment must appear.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.loadgen import Group

__all__ = ["ORDER", "Workload", "workloads"]

MIB = 1024 * 1024
ORDER = ("W1", "W2", "W3", "W3L", "W4", "W5", "W6")


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    groups: tuple[Group, ...] = ()
    idle_s: float = 0.0
    """W5: no load; measure the services at rest for this long (before and after the load)."""

    @property
    def concurrency(self) -> int:
        return sum(g.concurrency for g in self.groups)


def workloads(quick: bool = False) -> dict[str, Workload]:
    def pick(full: int, short: int) -> int:
        return short if quick else full

    w = [
        Workload(
            "W1",
            "latency: 1 stream at a time, 200 tokens, no gap",
            (Group(concurrency=1, requests=pick(200, 40), tokens=200),),
        ),
        Workload(
            "W2",
            "throughput: 64 concurrent streams, 500 tokens, no gap",
            (Group(concurrency=64, requests=pick(256, 64), tokens=500),),
        ),
        Workload(
            "W3",
            "cadence: 300 concurrent streams, 100 tokens, 20 ms gap",
            (Group(concurrency=300, requests=pick(600, 300), tokens=100, gap_ms=20, ramp_s=1),),
        ),
        Workload(
            "W3L",
            "scale: 1000 concurrent streams, 100 ms gap, 20 s",
            (
                Group(
                    concurrency=1000,
                    requests=pick(2000, 1000),
                    tokens=pick(100, 50),
                    gap_ms=100,
                    ramp_s=2,
                    timeout_s=120,
                ),
            ),
        ),
        Workload(
            "W4",
            "slow prefill: 100 streams, 30 s to the first token",
            (
                Group(
                    concurrency=100,
                    requests=100,
                    tokens=10,
                    ttft_ms=pick(30_000, 16_000),
                    timeout_s=90,
                ),
            ),
        ),
        Workload("W5", "idle: both services up, one connector, no traffic", idle_s=pick(30, 5)),
        Workload(
            "W6",
            "big bodies: 4 MiB prompts and answers, 16 concurrent, plus 50 ordinary streams",
            (
                Group(
                    name="big",
                    concurrency=16,
                    requests=pick(48, 16),
                    prompt_bytes=4 * MIB,
                    response_bytes=4 * MIB,
                    ramp_s=1,
                    timeout_s=120,
                ),
                Group(
                    name="ordinary",
                    concurrency=50,
                    background=True,
                    tokens=100,
                    gap_ms=20,
                    ramp_s=0.5,
                ),
            ),
        ),
    ]
    return {x.name: x for x in w}
