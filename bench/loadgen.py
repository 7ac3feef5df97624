"""The load generator: C concurrent streams for N requests or T seconds, then the figures.

    python -m bench.loadgen --url http://127.0.0.1:8000 --key sk-… -c 64 -n 256 --tokens 500

A run is one or more *groups* applied at once (W6 runs big bodies and ordinary streams side by
side); a *background* group keeps going until the others finish. Each worker owns one
keep-alive connection, opened before the clock starts, so a connection storm does not land in
the time to first token. Every request carries its own ``seed``: the demo LLM's tokens name it,
and ``bench.verify`` proves each stream got exactly its own tokens, after the run.

Prints one JSON object (``--json``) or a short summary. uvloop is used when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

from bench.httpclient import Connection, Exchange
from bench.verify import Outcome, percentile, verify_json, verify_stream

__all__ = ["Group", "Target", "main", "run", "summarise"]

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where the OpenAI API is: the base URL without ``/v1``, and the API key if any."""

    url: str
    key: str | None = None
    model: str = "demo"


@dataclass(frozen=True, kw_only=True)
class Group:
    name: str = "main"
    concurrency: int = 1
    requests: int | None = None
    """Total requests; or run for ``duration_s`` (new requests start until then)."""
    duration_s: float | None = None
    background: bool = False
    """Keep going until every non-background group has finished."""
    tokens: int = 100
    ttft_ms: float = 0.0
    gap_ms: float = 0.0
    prompt_bytes: int = 0
    """Pad the user message to about this many bytes (W6's big prompts)."""
    response_bytes: int | None = None
    """Ask for a non-streaming answer of exactly this size instead of a stream."""
    ramp_s: float = 0.0
    """Spread the workers' first requests over this long, as users arrive."""
    timeout_s: float = 120.0


@dataclass
class _Run:
    target: Target
    group: Group
    seed_base: int
    stop_at: float = float("inf")
    done: asyncio.Event | None = None
    issued: int = 0
    records: list[tuple[int, Exchange]] = field(default_factory=list)

    def next_seed(self) -> int | None:
        g = self.group
        if g.requests is not None and self.issued >= g.requests:
            return None
        if time.perf_counter() >= self.stop_at or (self.done is not None and self.done.is_set()):
            return None
        self.issued += 1
        return self.seed_base + self.issued


def build_request(target: Target, group: Group, seed: int) -> bytes:
    parts = urlsplit(target.url)
    content = "bench " + "x" * max(0, group.prompt_bytes - 6)
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [{"role": "user", "content": content}],
        "seed": seed,
    }
    if group.response_bytes is None:
        body |= {"stream": True, "max_tokens": group.tokens}
        body |= {"x_ttft_ms": group.ttft_ms, "x_gap_ms": group.gap_ms}
    else:
        body |= {"max_tokens": 64, "x_response_bytes": group.response_bytes}
    raw = _encode(body)
    head = [
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n",
        "Content-Type: application/json\r\nAccept: text/event-stream\r\n",
        f"Content-Length: {len(raw)}\r\n",
    ]
    if target.key:
        head.append(f"Authorization: Bearer {target.key}\r\n")
    return ("".join(head) + "\r\n").encode() + raw


async def _worker(run: _Run, index: int, conn: Connection | None) -> None:
    g = run.group
    parts = urlsplit(run.target.url)
    if g.ramp_s:
        await asyncio.sleep(g.ramp_s * index / g.concurrency)
    while (seed := run.next_seed()) is not None:
        raw = build_request(run.target, g, seed)
        if conn is None or conn.closed:
            try:
                conn = await Connection.open(parts.hostname or "127.0.0.1", parts.port or 80)
            except OSError as exc:
                ex = Exchange(time.perf_counter(), len(raw))
                ex.error = f"connect: {exc.strerror or exc}"
                run.records.append((seed, ex))
                await asyncio.sleep(0.05)
                continue
        run.records.append((seed, await conn.request(raw, g.timeout_s)))
    if conn is not None:
        conn.close()


async def _connect_all(target: Target, count: int) -> list[Connection | None]:
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    async def one() -> Connection | None:
        try:
            return await Connection.open(host, port)
        except OSError:
            return None  # the worker retries, and counts the failure

    conns: list[Connection | None] = []
    for start in range(0, count, 200):  # a burst bigger than a backlog gets SYN-retry delays
        conns += await asyncio.gather(*(one() for _ in range(start, min(count, start + 200))))
    return conns


async def run(target: Target, groups: list[Group], seed_base: int = 0) -> dict[str, Any]:
    """Apply the groups at once; return the summary (see ``summarise``) per group."""
    fg_done = asyncio.Event()
    runs = [
        _Run(target, g, seed_base + i * 10_000_000, done=fg_done if g.background else None)
        for i, g in enumerate(groups)
    ]
    conns = [await _connect_all(target, r.group.concurrency) for r in runs]
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for r in runs:
        if r.group.duration_s is not None:
            r.stop_at = started + r.group.duration_s
    async with asyncio.TaskGroup() as tg:
        bg = [
            tg.create_task(_worker(r, i, c))
            for r, cs in zip(runs, conns, strict=True)
            if r.group.background
            for i, c in enumerate(cs)
        ]
        fg = [
            _worker(r, i, c)
            for r, cs in zip(runs, conns, strict=True)
            if not r.group.background
            for i, c in enumerate(cs)
        ]
        await asyncio.gather(*fg)
        fg_done.set()
        await asyncio.gather(*bg)
    wall = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    out: dict[str, Any] = {"wall_s": wall, "client_cpu_s": client_cpu, "groups": {}}
    for r in runs:
        outcomes = [_verify(r.group, seed, ex) for seed, ex in r.records]
        out["groups"][r.group.name] = summarise(r.group, outcomes)
    return out


def _verify(group: Group, seed: int, ex: Exchange) -> Outcome:
    if group.response_bytes is None:
        return verify_stream(ex, seed, group.tokens)
    return verify_json(ex, seed, group.response_bytes)


def _ms(values: list[float], q: float) -> float | None:
    p = percentile(values, q)
    return None if p is None else p * 1000


def summarise(group: Group, outcomes: list[Outcome]) -> dict[str, Any]:
    """Latency percentiles in ms, rates per second, failures by reason."""
    ok = [o for o in outcomes if o.error is None]
    ttfts = sorted(o.ttft for o in ok if o.ttft is not None)
    gaps = sorted(g for o in ok for g in o.gaps)
    first = min((o.sent_at for o in outcomes), default=0.0)
    last = max((o.done_at for o in outcomes), default=0.0)
    wall = max(last - first, 1e-9)
    tokens = sum(o.tokens for o in ok)
    nbytes = sum(o.bytes_in + o.bytes_out for o in ok)
    reasons = Counter((o.error or "")[:80] for o in outcomes if o.error is not None)
    return {
        "group": asdict(group),
        "requests": len(outcomes),
        "ok": len(ok),
        "failures": len(outcomes) - len(ok),
        "failure_reasons": dict(reasons.most_common(5)),
        "exact": len(ok),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "requests_per_s": len(ok) / wall,
        "bytes_per_s": nbytes / wall,
        "ttft_p50_ms": _ms(ttfts, 50),
        "ttft_p95_ms": _ms(ttfts, 95),
        "ttft_p99_ms": _ms(ttfts, 99),
        "gap_p50_ms": _ms(gaps, 50),
        "gap_p99_ms": _ms(gaps, 99),
        "gap_max_ms": _ms(gaps, 100),
        "max_silence_ms": max((o.max_silence * 1000 for o in ok), default=None),
        "reads_per_token": sum(o.reads for o in ok) / tokens if tokens else None,
    }


def run_blocking(target: Target, groups: list[Group], seed_base: int = 0) -> dict[str, Any]:
    """``run`` on a fresh event loop (uvloop's when installed)."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run(target, groups, seed_base))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", help="JSON {target: {...}, groups: [{...}], seed_base} ('-': stdin)")
    ap.add_argument("--url", help="base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--key", help="API key")
    ap.add_argument("--model", default="demo")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-n", "--requests", type=int)
    ap.add_argument("-t", "--duration", type=float, help="seconds (instead of -n)")
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--gap-ms", type=float, default=0.0)
    ap.add_argument("--json", action="store_true", help="print the full JSON result")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.spec:
        raw = sys.stdin.read() if args.spec == "-" else args.spec
        spec = json.loads(raw)
        target = Target(**spec["target"])
        groups = [Group(**g) for g in spec["groups"]]
        seed_base = int(spec.get("seed_base", 0))
    elif args.url:
        target = Target(url=args.url, key=args.key, model=args.model)
        requests = None if args.duration else (args.requests or args.concurrency)
        groups = [
            Group(
                concurrency=args.concurrency,
                requests=requests,
                duration_s=args.duration,
                tokens=args.tokens,
                ttft_ms=args.ttft_ms,
                gap_ms=args.gap_ms,
            )
        ]
        seed_base = 0
    else:
        raise SystemExit("give --spec or --url")
    result = run_blocking(target, groups, seed_base)
    if args.spec or args.json:
        print(json.dumps(result))
    else:
        for name, g in result["groups"].items():
            print(
                f"{name}: {g['ok']}/{g['requests']} exact, {g['tokens_per_s']:.0f} tok/s, "
                f"ttft p50 {g['ttft_p50_ms']} ms p99 {g['ttft_p99_ms']} ms, "
                f"gap p99 {g['gap_p99_ms']} ms, failures {g['failure_reasons']}"
            )
    return 0 if all(g["failures"] == 0 for g in result["groups"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
