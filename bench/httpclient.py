"""A minimal keep-alive HTTP/1.1 client on asyncio's Protocol API, for the load generator.

Why not aiohttp's client: the client shares two cores with the upstream and the relay, so it
must cost less per token than either. Per read, this one only keeps the bytes, the clock and
the running length, and looks at the last 7 bytes for the end of a chunked body; de-chunking
and every SSE/JSON parse happen after the run (``Exchange.body``, ``bench.verify``).

Each read leaves a *mark* ``(raw body length, time)``: an SSE event's arrival time is the time
of the first mark that covers its last byte. Chunked bodies without trailers only (what
aiohttp, uvicorn and every OpenAI server send).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from time import perf_counter
from typing import cast

__all__ = ["Connection", "Exchange"]

_HEAD, _CHUNKED, _LENGTH, _UNTIL_EOF, _IDLE = range(5)
_LAST_CHUNK = b"\r\n0\r\n\r\n"


class Exchange:
    """One request and its response as the client saw it."""

    __slots__ = (
        "chunked",
        "done_at",
        "error",
        "head_at",
        "mark_len",
        "mark_t",
        "parts",
        "request_bytes",
        "sent_at",
        "status",
    )

    def __init__(self, sent_at: float, request_bytes: int) -> None:
        self.sent_at = sent_at
        self.request_bytes = request_bytes
        self.status = 0
        self.head_at = 0.0
        self.done_at = 0.0
        self.error: str | None = None
        self.chunked = False
        self.parts: list[bytes] = []
        self.mark_len: list[int] = []
        self.mark_t: list[float] = []

    def body(self) -> tuple[bytes, tuple[list[int], list[int]]]:
        """The de-chunked body, and where each chunk's payload starts (decoded offsets, raw
        offsets), which ``arrival`` needs to time a decoded position."""
        raw = b"".join(self.parts)
        if not self.chunked:
            return raw, ([], [])
        out: list[bytes] = []
        decoded_starts: list[int] = []
        raw_starts: list[int] = []
        pos = decoded = 0
        while (eol := raw.find(b"\r\n", pos)) >= 0:
            size = int(raw[pos:eol].split(b";", 1)[0], 16)
            if size == 0:
                break
            decoded_starts.append(decoded)
            raw_starts.append(eol + 2)
            out.append(raw[eol + 2 : eol + 2 + size])
            decoded += size
            pos = eol + 2 + size + 2
        return b"".join(out), (decoded_starts, raw_starts)

    def arrival(self, decoded_end: int, segments: tuple[list[int], list[int]]) -> float:
        """When the byte just before decoded offset ``decoded_end`` arrived."""
        raw_end = decoded_end
        decoded_starts, raw_starts = segments
        if decoded_starts:
            seg = max(bisect_right(decoded_starts, decoded_end - 1) - 1, 0)
            raw_end = raw_starts[seg] + decoded_end - decoded_starts[seg]
        return self.mark_t[min(bisect_left(self.mark_len, raw_end), len(self.mark_t) - 1)]


class Connection(asyncio.Protocol):
    """One connection, one request at a time (as a pooled client connection is used)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._ex: Exchange | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._head = bytearray()
        self._state = _IDLE
        self._remaining = 0
        self._raw_len = 0
        self._tail = b""
        self._keep_alive = True

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._ex is not None:
            if self._state == _UNTIL_EOF:
                self._finish(perf_counter())
            else:
                self._fail("connection closed mid-response" if self._ex.status else "no response")

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes, limit_s: float) -> Exchange:
        """Send one complete request and wait for the whole response (or the timeout)."""
        ex = Exchange(perf_counter(), len(raw))
        if self.closed or self.transport is None:
            ex.error = "connection closed before the request"
            return ex
        self._ex, self._state, self._keep_alive = ex, _HEAD, True
        self._head.clear()
        self._raw_len, self._tail = 0, b""
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            async with asyncio.timeout(limit_s):
                await waiter
        except TimeoutError:
            ex.error = "timeout"
            self._ex = None
            self.close()
        return ex

    def data_received(self, data: bytes) -> None:
        ex = self._ex
        if ex is None:
            return
        now = perf_counter()
        if self._state == _HEAD:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = bytes(self._head[end + 4 :])
            self._parse_head(ex, bytes(self._head[:end]), now)
            if self._state == _IDLE:
                self._finish(now)
                return
            if not data:
                return
        ex.parts.append(data)
        self._raw_len += len(data)
        ex.mark_len.append(self._raw_len)
        ex.mark_t.append(now)
        state = self._state
        if state == _CHUNKED:
            tail = data[-7:] if len(data) >= 7 else (self._tail + data)[-7:]
            self._tail = tail
            if tail == _LAST_CHUNK or (self._raw_len == 5 and tail == _LAST_CHUNK[2:]):
                self._finish(now)
        elif state == _LENGTH:
            self._remaining -= len(data)
            if self._remaining <= 0:
                self._finish(now)

    def _parse_head(self, ex: Exchange, head: bytes, now: float) -> None:
        lines = head.decode("latin-1").split("\r\n")
        ex.status = int(lines[0].split(" ", 2)[1])
        ex.head_at = now
        self._state = _UNTIL_EOF
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "transfer-encoding" and "chunked" in value:
                self._state = _CHUNKED
                ex.chunked = True
            elif name == "content-length" and self._state == _UNTIL_EOF:
                self._remaining = int(value)
                self._state = _LENGTH if self._remaining else _IDLE
            elif name == "connection" and value == "close":
                self._keep_alive = False

    def _finish(self, now: float) -> None:
        ex, waiter = self._ex, self._waiter
        self._ex, self._state = None, _IDLE
        if ex is not None:
            ex.done_at = now
        if not self._keep_alive:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, reason: str) -> None:
        ex, waiter = self._ex, self._waiter
        self._ex, self._state = None, _IDLE
        if ex is not None:
            ex.error = reason
            ex.done_at = perf_counter()
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
