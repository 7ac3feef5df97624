"""A scripted connector for broker tests: a real WebSocket client driven by ``ConnectorSession``.

It dials the broker's ``/v1/relay`` over 127.0.0.1 like the real connector, but each request
is served by a script (an ``async def script(stream)``) instead of a model server, so a test
can make it stream canned SSE, stall, fail, die mid-stream or watch for ``cancel``. Everything
it receives is recorded (``opens``, ``cancels``, ``goaways``) for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from remotellm_protocol import (
    SUBPROTOCOLS,
    Body,
    Cancel,
    CancelReason,
    ConnectorSession,
    Credit,
    Data,
    End,
    ErrorCode,
    Frame,
    GoAway,
    Head,
    Hello,
    ModelInfo,
    Models,
    Open,
    StreamError,
    Usage,
    Welcome,
)

Script = Callable[["PeerStream"], Awaitable[None]]


def sse_chunks(n: int, *, model: str = "m", done: bool = True) -> list[bytes]:
    """``n`` OpenAI-style chat chunks ``tok0``.. and ``data: [DONE]``."""
    chunks = [
        (
            f'data: {{"id":"c1","object":"chat.completion.chunk","model":"{model}",'
            f'"choices":[{{"index":0,"delta":{{"content":"tok{i} "}},"finish_reason":null}}]}}\n\n'
        ).encode()
        for i in range(n)
    ]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return chunks


def serve_sse(n: int = 3, gap: float = 0.0, usage: Usage | None = None) -> Script:
    """A script streaming ``n`` chunks ``gap`` seconds apart, then ``end`` with usage."""

    async def script(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        for chunk in sse_chunks(n):
            if gap:
                await asyncio.sleep(gap)
            await stream.data(chunk)
        await stream.end(
            usage=usage or Usage(prompt_tokens=5, completion_tokens=n, total_tokens=n + 5)
        )

    return script


def serve_json(body: bytes, status: int = 200) -> Script:
    async def script(stream: PeerStream) -> None:
        await stream.head(status, [("content-type", "application/json")])
        await stream.data(body)
        await stream.end(usage=Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4))

    return script


def fail_with(code: ErrorCode, message: str = "", retry_after: float | None = None) -> Script:
    async def script(stream: PeerStream) -> None:
        await stream.end(
            error=StreamError(code=int(code), message=message, retry_after=retry_after)
        )

    return script


async def stall(stream: PeerStream) -> None:
    """Never answer (a long prefill); the peer ends the stream when it is cancelled."""
    await asyncio.Event().wait()


class PeerStream:
    """One stream as a script sees it."""

    def __init__(self, peer: ConnectorPeer, frame: Open) -> None:
        self.peer = peer
        self.open = frame
        self.id = frame.stream
        self.body = bytearray(frame.body)
        self.body_done = asyncio.Event()
        if not frame.more_body:
            self.body_done.set()
        self.cancelled = asyncio.Event()
        self.cancel_reason: CancelReason | None = None
        self.credit = asyncio.Event()
        self.ended = False

    async def head(self, status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> None:
        await self.body_done.wait()
        await self.peer.send(Head(stream=self.id, status=status, headers=list(headers)))

    async def data(self, chunk: bytes) -> None:
        """Send ``chunk``, split to fit the window, waiting for credit like a connector."""
        session = self.peer.session
        view = memoryview(chunk)
        while view:
            room = min(session.available(self.id), session.max_data_chunk)
            if room <= 0:
                self.credit.clear()
                await self.credit.wait()
                continue
            piece, view = bytes(view[:room]), view[room:]
            await self.peer.send(Data(stream=self.id, chunk=piece))

    def session_alive(self) -> bool:
        ws = self.peer.ws
        return not self.ended and ws is not None and not ws.closed

    async def end(self, usage: Usage | None = None, error: StreamError | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        await self.peer.send(End(stream=self.id, usage=usage, error=error))


@dataclass
class ConnectorPeer:
    """A fake connector on a real WebSocket."""

    relay_url: str
    token: str
    name: str = "peer"
    models: Sequence[str] = ("m",)
    max_streams: int = 8
    script: Script = field(default_factory=lambda: serve_sse())
    context_length: int | None = None
    subprotocols: Sequence[str] = SUBPROTOCOLS
    #: False: the LLM server behind it is down (its models are announced unavailable).
    available: bool = True
    #: ``ModelInfo.endpoints`` announced for every model (None: an older connector).
    endpoints: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.session = ConnectorSession()
        self.opens: list[Open] = []
        self.streams: dict[int, PeerStream] = {}
        self.cancels: list[tuple[int, CancelReason, float]] = []
        self.goaways: list[GoAway] = []
        self.welcome: Welcome | None = None
        self.close_code: int | None = None
        self.opened = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> Welcome:
        self._http = aiohttp.ClientSession()
        self.ws = await self._http.ws_connect(
            self.relay_url,
            headers={"Authorization": f"Bearer {self.token}"},
            protocols=tuple(self.subprotocols),
            autoping=True,
        )
        infos = [
            ModelInfo(
                id=m,
                owned_by="tests",
                context_length=self.context_length,
                available=self.available,
                endpoints=None if self.endpoints is None else list(self.endpoints),
            )
            for m in self.models
        ]
        await self.send(
            Hello(name=self.name, version="test", models=infos, max_streams=self.max_streams)
        )
        msg = await self.ws.receive(timeout=5)
        frame = self.session.receive(msg.data)
        assert isinstance(frame, Welcome)
        self.welcome = frame
        self._reader = asyncio.create_task(self._read())
        return frame

    async def send(self, frame: Frame) -> None:
        assert self.ws is not None
        data = self.session.send(frame)
        await self.ws.send_bytes(data)

    async def announce(self, models: Sequence[str], *, available: bool = True) -> None:
        await self.send(Models(models=[ModelInfo(id=m, available=available) for m in models]))

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.BINARY:
                break
            frame = self.session.receive(msg.data)
            self._on_frame(frame)
        self.close_code = self.ws.close_code
        for stream in self.streams.values():
            stream.cancelled.set()

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, Open):
            stream = self.streams[frame.stream] = PeerStream(self, frame)
            self.opens.append(frame)
            self.opened.set()
            self._spawn(self._serve(stream))
        elif isinstance(frame, Body):
            stream = self.streams[frame.stream]
            stream.body += frame.chunk
            if frame.last:
                stream.body_done.set()
        elif isinstance(frame, Credit):
            self.streams[frame.stream].credit.set()
        elif isinstance(frame, Cancel):
            stream = self.streams[frame.stream]
            stream.cancel_reason = CancelReason.parse(frame.reason)
            self.cancels.append((frame.stream, stream.cancel_reason, time.monotonic()))
            stream.cancelled.set()
        elif isinstance(frame, GoAway):
            self.goaways.append(frame)

    async def _serve(self, stream: PeerStream) -> None:
        script = asyncio.create_task(self.script(stream))
        cancelled = asyncio.create_task(stream.cancelled.wait())
        try:
            await asyncio.wait({script, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            if not script.done():
                script.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await script
                if stream.session_alive():
                    await stream.end(error=StreamError(code=int(ErrorCode.CANCELLED)))
        finally:
            cancelled.cancel()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drop(self) -> None:
        """Vanish abruptly (the TCP connection closes without a close frame)."""
        assert self.ws is not None
        connection = self.ws._conn  # the test reaches in: no public way to cut a socket dead
        if connection is not None and connection.transport is not None:
            connection.transport.abort()
        await self.close()

    def go_silent(self) -> None:
        """Stop reading (and so answering pings) without closing: a hung connector."""
        if self._reader is not None:
            self._reader.cancel()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._http is not None:
            await self._http.close()
