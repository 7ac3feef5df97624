"""Half-sent requests are not held forever (issue 15 §3).

Many raw connections send part of a request and then nothing. Those that stop inside the
headers are closed after ``header_timeout_s``; those that stop inside the body (with a valid
key, so the route is reading it) get 408 and are closed after ``body_timeout_s``. Meanwhile
the broker keeps answering everyone else, and the bytes the stalled bodies held are returned
to the in-flight budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from broker_rig import Rig, read_sse, running_broker

CHAT = "/v1/chat/completions"
CONNECTIONS = 200
TIMEOUT_S = 1.0
#: How late a close may come: the loop must also serve 200 sockets on a busy shared machine.
SLACK_S = 4.0


async def _stalled(rig: Rig, sent: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(rig.bound.host, rig.bound.port)
    writer.write(sent)
    await writer.drain()
    return reader, writer


async def _until_closed(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """When the broker closed the connection, and everything it said before."""
    received = b""
    with contextlib.suppress(ConnectionResetError):  # a reset after the answer is a close too
        while chunk := await reader.read(65536):
            received += chunk
    return time.monotonic(), received


async def _still_serving(rig: Rig) -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with rig.http.post(rig.url + CHAT, json=payload, headers=rig.auth) as resp:
        assert resp.status == 200
        assert (await read_sse(resp))[-1] == "data: [DONE]"


async def test_half_sent_headers_are_closed_within_the_header_timeout(tmp_path: Path) -> None:
    async with running_broker(tmp_path, header_timeout_s=TIMEOUT_S) as rig:
        await rig.peer()
        partial = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {rig.key}\r\n"
        started = time.monotonic()
        conns = [await _stalled(rig, partial.encode()) for _ in range(CONNECTIONS)]
        await _still_serving(rig)
        results = await asyncio.wait_for(
            asyncio.gather(*(_until_closed(reader) for reader, _ in conns)),
            TIMEOUT_S + SLACK_S,
        )
        assert all(received == b"" for _, received in results)  # no request, no answer
        assert max(closed for closed, _ in results) - started < TIMEOUT_S + SLACK_S
        await _still_serving(rig)
        for _, writer in conns:
            writer.close()


async def test_half_sent_bodies_get_408_and_are_closed_within_the_body_timeout(
    tmp_path: Path,
) -> None:
    async with running_broker(
        tmp_path, body_timeout_s=TIMEOUT_S, rate_limit_rpm=0, max_streams_per_key=0
    ) as rig:
        await rig.peer()
        body = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 20_000 + b'"}]}'
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {rig.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        started = time.monotonic()
        conns = [await _stalled(rig, head + body[: len(body) // 2]) for _ in range(CONNECTIONS)]
        await _still_serving(rig)
        results = await asyncio.wait_for(
            asyncio.gather(*(_until_closed(reader) for reader, _ in conns)),
            TIMEOUT_S + SLACK_S,
        )
        for _, received in results:
            assert received.startswith(b"HTTP/1.1 408 "), received[:200]
            assert b'"code":"request_timeout"' in received
        assert max(closed for closed, _ in results) - started < TIMEOUT_S + SLACK_S
        assert rig.state.body_budget.used == 0
        await _still_serving(rig)
        for _, writer in conns:
            writer.close()


async def test_a_body_trickled_byte_by_byte_is_cut_at_the_body_timeout(tmp_path: Path) -> None:
    async with running_broker(tmp_path, body_timeout_s=TIMEOUT_S) as rig:
        await rig.peer()
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {rig.key}\r\n"
            "Content-Length: 100000\r\n\r\n"
        ).encode()
        reader, writer = await _stalled(rig, head)
        started = time.monotonic()
        received = b""
        with_time = asyncio.create_task(_until_closed(reader))
        while not with_time.done() and time.monotonic() - started < TIMEOUT_S + SLACK_S:
            writer.write(b" ")  # always something new, never the whole body
            await asyncio.sleep(0.05)
        closed, received = await with_time
        assert received.startswith(b"HTTP/1.1 408 ")
        assert closed - started < TIMEOUT_S + SLACK_S
        writer.close()
