"""The aiohttp behaviour the fast path relies on (``fastpath``'s preconditions), checked on
a real aiohttp server and raw client sockets. A failure here after an aiohttp upgrade means
the direct write of relayed chunks is no longer safe: fix ``fastpath`` before lifting the
upper bound on aiohttp in pyproject.toml."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from remotellm_broker.fastpath import direct_writer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def _serve(handler: Handler) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _raw_get(port: int, version: str = "1.1") -> bytes:
    """The bytes of one response, read to EOF (the server closes: ``Connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET / HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    async with asyncio.timeout(10):
        raw = await reader.read(-1)
    writer.close()
    return raw


def _split(raw: bytes) -> tuple[bytes, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    return head, body


@pytest.fixture
def written() -> list[object]:
    return []


async def _first_then_direct(request: web.Request, record: list[object]) -> web.StreamResponse:
    """What ``forward`` does: prepare, one write through aiohttp, then direct writes."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"first")
    write = direct_writer(request, resp)
    record.append(write is not None)
    if write is not None:
        record.append(write(b"second"))
        record.append(write(b"third!"))
    await resp.write_eof()
    return resp


async def test_direct_chunks_follow_the_headers_in_aiohttps_chunked_framing(
    written: list[object],
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _first_then_direct(request, written)

    async with _serve(handler) as port:
        raw = await _raw_get(port)
    head, body = _split(raw)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    # The headers left with the first write; the direct chunks came behind them, framed
    # exactly as aiohttp frames its own, and write_eof still terminated the body.
    assert body == b"5\r\nfirst\r\n6\r\nsecond\r\n6\r\nthird!\r\n0\r\n\r\n"
    assert written == [True, True, True]


async def test_over_http_1_0_the_body_is_written_as_is(written: list[object]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _first_then_direct(request, written)

    async with _serve(handler) as port:
        raw = await _raw_get(port, "1.0")
    head, body = _split(raw)
    assert b"transfer-encoding" not in head.lower()
    assert body == b"firstsecondthird!"
    assert written == [True, True, True]


@pytest.mark.parametrize("setup", ["compressed", "content-length"])
async def test_a_response_aiohttp_encodes_or_counts_gets_no_direct_writer(
    setup: str, written: list[object]
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if setup == "compressed":
            resp.enable_compression(force=web.ContentCoding.gzip)
        else:
            resp.content_length = 5
        await resp.prepare(request)
        await resp.write(b"first")
        written.append(direct_writer(request, resp))
        await resp.write_eof()
        return resp

    async with _serve(handler) as port:
        await _raw_get(port)
    assert written == [None]


async def test_a_paused_socket_refuses_direct_writes_until_drained() -> None:
    """``writing_paused`` follows asyncio's flow control and ``writer.drain()`` waits for it
    to clear: the writer refuses while the client does not read, and takes chunks again
    once it caught up. No byte is lost or reordered."""
    paused = asyncio.Event()
    outcome: dict[str, object] = {}
    chunk = b"x" * 65536

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first")
        try:
            assert request.transport is not None
            request.transport.set_write_buffer_limits(high=4096)
            write = direct_writer(request, resp)
            assert write is not None
            accepted = 0
            while accepted < 1024 and write(chunk):  # bounded (64 MiB): ends on pause
                accepted += 1
            outcome["paused"] = request.protocol.writing_paused
            outcome["accepted"] = accepted
        except Exception as exc:
            outcome["error"] = repr(exc)
            raise
        finally:
            paused.set()
        await request.writer.drain()  # returns once the client read enough
        outcome["resumed"] = not request.protocol.writing_paused
        outcome["after_drain"] = write(b"last")
        await resp.write_eof()
        return resp

    async with _serve(handler) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(30):
            await paused.wait()
            assert "error" not in outcome, outcome
            raw = await reader.read(-1)
        writer.close()
    assert outcome["paused"] is True
    assert outcome["resumed"] is True
    assert outcome["after_drain"] is True
    accepted = outcome["accepted"]
    assert isinstance(accepted, int)
    assert accepted >= 1
    _, body = _split(raw)
    framed = b"%x\r\n%b\r\n" % (len(chunk), chunk)
    assert body == b"5\r\nfirst\r\n" + framed * accepted + b"4\r\nlast\r\n0\r\n\r\n"
