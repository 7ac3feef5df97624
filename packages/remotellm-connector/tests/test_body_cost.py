"""A 16 MiB request costs the connector at most three times its size and never stalls its loop.

The dispatcher gets the body as the broker sends it (``open`` and ``body`` frames), adds
``stream_options.include_usage`` (the body has other stream options, so the option has to
be spliced inside them) and sends it to a model server that reads and discards it. Peak
traced memory (tracemalloc) is the cost; the loop's health is measured with a ticker task,
in the loop thread's CPU time (work that holds the loop) and in wall time (which also sees a
worker thread that keeps the GIL), the best of a few runs so a busy shared machine's
preemption does not count.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable

import pytest
from aiohttp import web

from remotellm_connector.dispatch import Abort, Dispatcher
from remotellm_connector.metrics import Metrics
from remotellm_connector.policy import Policy
from remotellm_connector.upstream import Upstream
from remotellm_protocol import (
    BODY_CHUNK_BYTES,
    Body,
    ConnectorSession,
    End,
    Frame,
    Hello,
    Open,
    Principal,
    Welcome,
    encode,
)

MIB = 1024 * 1024
SIZE = 16 * MIB - 4096
WHO = Principal(user_id="local:alice", key_id="k1")
SSE = (
    b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}\n\n'
    b"data: [DONE]\n\n"
)


def big_body(size: int) -> bytes:
    """A long conversation of short non-ASCII turns, then one long turn, ``size`` bytes."""
    head = b'{"model":"m","stream":true,"stream_options":{"x":1},"messages":['
    short = '{"role":"user","content":"é€ab, a short turn"},'.encode()
    last, tail = b'{"role":"user","content":"', b'"}]}'
    turns = (size // 2) // len(short)
    fill = size - len(head) - turns * len(short) - len(last) - len(tail)
    return head + short * turns + last + b"x" * fill + tail


class Discarding:
    """A model server that reads a request body piece by piece and keeps only its size and
    whether the usage option arrived."""

    def __init__(self) -> None:
        self.received = 0
        self.asked_usage = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        tail = b""
        while chunk := await request.content.readany():
            self.received += len(chunk)
            self.asked_usage |= b'"include_usage":true' in tail + chunk
            tail = chunk[-32:]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(SSE)
        await resp.write_eof()
        return resp


async def serve_one(body: bytes, llm_url: str) -> None:
    """Run one request through a real dispatcher and upstream client until its ``end``."""
    session = ConnectorSession()
    session.send(Hello(name="t", version="0", max_streams=8))
    welcome = Welcome(
        session_id="s", max_frame_bytes=1 << 20, initial_window=1 << 20, heartbeat_s=5
    )
    session.receive(encode(welcome))
    ended = asyncio.Event()

    async def send(frame: Frame) -> None:
        session.send(frame)
        if isinstance(frame, End):
            assert frame.error is None, frame.error
            assert frame.usage is not None  # the spliced option worked
            ended.set()

    async with Upstream(llm_url, read_timeout=60) as upstream, asyncio.TaskGroup() as tg:
        dispatcher = Dispatcher(
            session=session,
            send=send,
            upstream=upstream,
            policy=Policy(),
            metrics=Metrics(),
            task_group=tg,
        )
        first = body[:BODY_CHUNK_BYTES]
        dispatcher.handle(
            session.receive(
                encode(
                    Open(
                        stream=1,
                        correlation_id="c",
                        method="POST",
                        path="/v1/chat/completions",
                        principal=WHO,
                        body=first,
                        more_body=True,
                    )
                )
            )
        )
        for offset in range(BODY_CHUNK_BYTES, len(body), BODY_CHUNK_BYTES):
            end = offset + BODY_CHUNK_BYTES
            frame = Body(stream=1, chunk=body[offset:end], last=end >= len(body))
            dispatcher.handle(session.receive(encode(frame)))
            await asyncio.sleep(0)  # frames arrive one socket read at a time
        await asyncio.wait_for(ended.wait(), 60)
        dispatcher.abort_all(Abort.RELAY_LOST)


async def loop_health_while(work: Awaitable[None]) -> tuple[float, float]:
    """The longest busy stretch of the loop (its thread's CPU time) and the longest lag of
    a 2 ms ticker (wall time) while ``work`` runs."""
    busy = wall = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal busy, wall
        while not done.is_set():
            cpu, now = time.thread_time(), time.monotonic()
            await asyncio.sleep(0.002)
            busy = max(busy, time.thread_time() - cpu)
            wall = max(wall, time.monotonic() - now - 0.002)

    tick = asyncio.create_task(ticker())
    try:
        await work
    finally:
        done.set()
        await tick
    return busy, wall


@pytest.fixture
async def llm() -> AsyncIterator[tuple[Discarding, str]]:
    server = Discarding()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield server, f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.slow
async def test_a_16_mib_body_costs_at_most_three_times_its_size(
    llm: tuple[Discarding, str],
) -> None:
    server, url = llm
    body = big_body(SIZE)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await serve_one(body, url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert server.asked_usage
    assert server.received > SIZE  # the body plus the option
    growth = peak - before
    print(f"connector peak growth {growth / MIB:.1f} MiB for a {SIZE / MIB:.1f} MiB body")
    assert growth <= 3 * SIZE, f"{growth / SIZE:.2f}x the body"


@pytest.mark.slow
async def test_a_16_mib_body_never_stalls_the_loop_for_100_ms(
    llm: tuple[Discarding, str],
) -> None:
    server, url = llm
    body = big_body(SIZE)
    runs = [await loop_health_while(serve_one(body, url)) for _ in range(3)]
    busy, wall = min(runs, key=lambda run: run[0] + run[1])
    print(f"connector loop: longest busy stretch {busy * 1000:.1f} ms, lag {wall * 1000:.1f} ms")
    assert server.asked_usage
    assert busy < 0.100
    assert wall < 0.100
