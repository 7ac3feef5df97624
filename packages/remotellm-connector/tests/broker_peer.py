"""A real relay endpoint on 127.0.0.1 that plays the broker's side with ``BrokerSession``.

It is an aiohttp WebSocket server, as the real broker is: the connector under test dials it over
TCP, and every frame either way goes through the protocol package's state machines, so a
connector that breaks the protocol fails here as it would against the broker.

    async with BrokerPeer() as peer:
        ...start a connector with broker_url=peer.url...
        conn = await peer.next_connection()
        stream = await conn.open(body={"model": "demo", ...})
        end = await stream.wait_end()
"""

import asyncio
import contextlib
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import msgspec
from aiohttp import WSMsgType, web

from remotellm_protocol import (
    BODY_CHUNK_BYTES,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_STREAM_WINDOW,
    Body,
    BrokerSession,
    Cancel,
    CancelReason,
    CloseCode,
    Data,
    End,
    ErrorCode,
    Frame,
    GoAway,
    Head,
    Hello,
    Models,
    Open,
    Principal,
    RemoteProtocolError,
    Welcome,
    choose_subprotocol,
)

TOKEN = "rct-test-token"
PRINCIPAL = Principal(user_id="local:alice", key_id="k1", name="alice")
WAIT_S = 10.0


def error_code(end: End) -> ErrorCode | None:
    """The error code an ``end`` carries, None for success."""
    return None if end.error is None else ErrorCode.parse(end.error.code)


class PeerStream:
    """What the peer received on one stream."""

    def __init__(self, conn: "PeerConnection", stream_id: int, *, auto_credit: bool) -> None:
        self.conn = conn
        self.id = stream_id
        self.auto_credit = auto_credit
        self.head: Head | None = None
        self.chunks: list[bytes] = []
        self.received = 0
        self.end: End | None = None
        self._changed = asyncio.Event()

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def _notify(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Any, within: float = WAIT_S) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_head(self, within: float = WAIT_S) -> Head:
        await self.wait_for(lambda: self.head is not None or self.end is not None, within)
        assert self.head is not None, f"stream ended without head: {self.end}"
        return self.head

    async def wait_end(self, within: float = WAIT_S) -> End:
        await self.wait_for(lambda: self.end is not None, within)
        assert self.end is not None
        return self.end

    async def wait_bytes(self, n: int, within: float = WAIT_S) -> None:
        await self.wait_for(lambda: self.received >= n or self.end is not None, within)

    async def credit(self, nbytes: int) -> None:
        """Acknowledge ``nbytes`` as delivered (for a stream without auto credit)."""
        data = self.conn.session.acknowledge(self.id, nbytes)
        if data is not None:
            await self.conn.ws.send_bytes(data)

    def sse_payloads(self) -> list[str]:
        """The ``data:`` payloads of an SSE body."""
        events = self.body.decode().split("\n\n")
        assert events[-1] == "", self.body[-200:]
        return [e.removeprefix("data: ") for e in events[:-1]]


class PeerConnection:
    """One connector's relay connection as the broker sees it."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.ws = ws
        self.session = BrokerSession()
        self.hello: Hello | None = None
        self.streams: dict[int, PeerStream] = {}
        self.received: list[Frame] = []
        self.models: list[Models] = []
        self.goaway: GoAway | None = None
        self.errors: list[str] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()

    async def open(
        self,
        *,
        method: str = "POST",
        path: str = "/v1/chat/completions",
        body: bytes | Mapping[str, Any] = b"",
        principal: Principal = PRINCIPAL,
        headers: list[tuple[str, str]] | None = None,
        deadline_ms: int | None = None,
        auto_credit: bool = True,
        correlation_id: str = "req-1",
    ) -> PeerStream:
        """Send ``open`` (and ``body`` frames for a large body); return the stream."""
        raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        sid = self.session.next_stream_id()
        stream = PeerStream(self, sid, auto_credit=auto_credit)
        self.streams[sid] = stream
        first, rest = raw[:BODY_CHUNK_BYTES], raw[BODY_CHUNK_BYTES:]
        frame = Open(
            stream=sid,
            correlation_id=correlation_id,
            method=method,
            path=path,
            principal=principal,
            headers=headers if headers is not None else [("content-type", "application/json")],
            deadline_ms=deadline_ms,
            body=first,
            more_body=bool(rest),
        )
        await self.ws.send_bytes(self.session.send(frame))
        while rest:
            piece, rest = rest[:BODY_CHUNK_BYTES], rest[BODY_CHUNK_BYTES:]
            if sid not in self.session.streams:
                break  # the connector already ended it (e.g. body too large)
            await self.ws.send_bytes(
                self.session.send(Body(stream=sid, chunk=piece, last=not rest))
            )
        return stream

    async def cancel(
        self, stream: PeerStream, reason: CancelReason = CancelReason.CLIENT_GONE
    ) -> None:
        await self.ws.send_bytes(self.session.send(Cancel(stream=stream.id, reason=reason)))

    async def send_goaway(self, reason: str = "broker restarting") -> None:
        await self.ws.send_bytes(self.session.send(GoAway(reason=reason)))

    async def send_raw(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self, code: int = CloseCode.GOING_AWAY) -> None:
        await self.ws.close(code=code)

    def kill(self) -> None:
        """Drop the TCP connection without a close frame (a crashed broker, a dead NAT)."""
        transport = self.request.transport
        assert transport is not None
        transport.abort()

    async def wait_closed(self, within: float = WAIT_S) -> None:
        async with asyncio.timeout(within):
            await self.closed.wait()

    async def wait_until(self, predicate: Any, within: float = WAIT_S) -> None:
        """Return once ``predicate()`` holds (checked after every frame received)."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_models(self, count: int, within: float = WAIT_S) -> Models:
        await self.wait_until(lambda: len(self.models) >= count, within)
        return self.models[count - 1]

    async def _on_frame(self, frame: Frame) -> None:
        self.received.append(frame)
        if isinstance(frame, Models):
            self.models.append(frame)
        elif isinstance(frame, GoAway):
            self.goaway = frame
        elif isinstance(frame, Head | Data | End):
            stream = self.streams[frame.stream]
            if isinstance(frame, Head):
                stream.head = frame
            elif isinstance(frame, Data):
                stream.chunks.append(frame.chunk)
                stream.received += len(frame.chunk)
                if stream.auto_credit:
                    ack = self.session.acknowledge(frame.stream, len(frame.chunk))
                    if ack is not None:
                        await self.ws.send_bytes(ack)
            else:
                stream.end = frame
            stream._notify()
        self._changed.set()


class BrokerPeer:
    """The relay server; ``connections`` in the order they completed the handshake."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        window: int = DEFAULT_STREAM_WINDOW,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        port: int = 0,
    ) -> None:
        self.token = token
        self.window = window
        self.max_frame_bytes = max_frame_bytes
        self.port = port
        #: When set, the upgrade is refused with this HTTP status.
        self.refuse_status: int | None = None
        #: Subprotocols this peer speaks (empty: it accepts none).
        self.speaks: tuple[int, ...] = (1,)
        self.connections: list[PeerConnection] = []
        self.attempts = 0
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/relay"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/v1/relay", self._relay)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for conn in self.connections:
            if not conn.ws.closed:
                with contextlib.suppress(Exception):
                    conn.kill()
        if self._runner is not None:
            await self._runner.cleanup()

    async def next_connection(self, within: float = WAIT_S) -> PeerConnection:
        """The first connection not returned before."""
        async with asyncio.timeout(within):
            while not self._unseen():
                self._arrived.clear()
                await self._arrived.wait()
        conn = self._unseen()[0]
        self._seen = getattr(self, "_seen", 0) + 1
        return conn

    def _unseen(self) -> list[PeerConnection]:
        return self.connections[getattr(self, "_seen", 0) :]

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if self.refuse_status is not None:
            return web.Response(status=self.refuse_status)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="bad connector token")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        chosen = choose_subprotocol(offered, self.speaks)
        if chosen is None:
            return web.Response(status=426, text="no common wire version")
        ws = web.WebSocketResponse(protocols=(chosen,), max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        conn = PeerConnection(request, ws)
        try:
            first = await ws.receive(timeout=WAIT_S)
            hello = conn.session.receive(first.data)
            assert isinstance(hello, Hello)
            conn.hello = hello
            welcome = Welcome(
                session_id=f"s{len(self.connections) + 1}",
                max_frame_bytes=self.max_frame_bytes,
                initial_window=self.window,
                heartbeat_s=5.0,
            )
            await ws.send_bytes(conn.session.send(welcome))
            self.connections.append(conn)
            self._arrived.set()
            async for msg in ws:
                if msg.type is not WSMsgType.BINARY:
                    conn.errors.append(f"unexpected {msg.type}")
                    continue
                await conn._on_frame(conn.session.receive(msg.data))
        except RemoteProtocolError as err:
            conn.errors.append(err.message)
            await ws.close(code=err.close_code)
        finally:
            conn.closed.set()
        return ws
