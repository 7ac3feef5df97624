"""One connected connector: its WebSocket, its protocol session, its streams.

``ConnectorLink`` is the thin I/O shell around a ``BrokerSession``: ``feed`` passes each
received message to the session and the resulting frame to the stream's ``Channel``;
everything sent goes through ``session.send`` and then one writer task. The writer exists
because the session validates frames in the order they are encoded, so the wire order must
be that order; a single queue guarantees it, lets any code (including cleanup in a
cancelled request) send synchronously, and keeps a slow connector socket from blocking the
request handlers. Large request bodies wait for that queue to drain between ``body``
frames, so one upload never holds the socket for long.

A stream's routing slot is released when the stream really ends on the session (``end``
received, or the connection lost), not when its client leaves: a cancelled stream still
counts against the connector's ``max_streams`` until the connector confirms it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from aiohttp import web

from remotellm_broker.channel import LOST, Broken, Channel
from remotellm_broker.registry import Connector
from remotellm_protocol import (
    BODY_CHUNK_BYTES,
    Body,
    BrokerSession,
    Cancel,
    CancelReason,
    Data,
    End,
    GoAway,
    Head,
    Hello,
    LocalProtocolError,
    ModelInfo,
    Models,
    Open,
    Principal,
    ProtocolError,
    RemoteProtocolError,
    decode,
)

__all__ = ["ConnectorLink", "LinkGone"]

#: Queued outgoing bytes above which body uploads pause until the writer catches up.
_OUT_HIGH_WATER = 1024 * 1024


class LinkGone(Exception):
    """The connector closed or stopped taking streams before the ``open`` could be sent."""


class ConnectorLink(Connector):
    """A connector as routed to, plus the socket and session that reach it."""

    __slots__ = (
        "_dirty",
        "_drained",
        "_flush_handle",
        "_loop",
        "_on_models",
        "_on_release",
        "_out",
        "_out_bytes",
        "_streams",
        "_wake",
        "closed",
        "session",
        "version",
        "ws",
    )

    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        session: BrokerSession,
        hello: Hello,
        session_id: str,
        on_release: Callable[[ConnectorLink], None],
        on_models: Callable[[ConnectorLink, Sequence[ModelInfo]], None],
    ) -> None:
        super().__init__(hello.name, session_id, hello.models, hello.max_streams)
        self.ws = ws
        self.session = session
        self.version = hello.version
        self.closed = False
        self._on_release = on_release
        self._on_models = on_models
        self._streams: dict[int, Channel | None] = {}
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        #: Channels with staged data chunks, flushed once per batch of received frames.
        self._dirty: list[Channel] = []
        self._flush_handle: asyncio.Handle | None = None

    # -- sending ----------------------------------------------------------------------------

    def _enqueue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        self._wake.set()

    async def run_writer(self) -> None:
        """Write queued frames to the socket, in order, until the link closes."""
        out, ws = self._out, self.ws
        try:
            while True:
                while out:
                    data = out.popleft()
                    self._out_bytes -= len(data)
                    await ws.send_bytes(data)
                    if self._out_bytes < _OUT_HIGH_WATER:
                        self._drained.set()
                if self.closed:
                    return
                self._wake.clear()
                await self._wake.wait()
        except ConnectionError:
            return  # the reader sees the close and ends the link
        finally:
            self._drained.set()

    def open(
        self,
        channel: Channel,
        *,
        correlation_id: str,
        method: str,
        path: str,
        principal: Principal,
        headers: list[tuple[str, str]],
        deadline_ms: int | None,
        body: bytes,
    ) -> int:
        """Send ``open`` with the first piece of ``body``; return the new stream id.

        Raises ``LinkGone`` when the connector is closed or sent ``goaway`` meanwhile.
        """
        if self.closed or not self.accepting:
            raise LinkGone(self.name)
        stream_id = self.session.next_stream_id()
        frame = Open(
            stream=stream_id,
            correlation_id=correlation_id,
            method=method,
            path=path,
            principal=principal,
            headers=headers,
            deadline_ms=deadline_ms,
            body=body[:BODY_CHUNK_BYTES],
            more_body=len(body) > BODY_CHUNK_BYTES,
        )
        try:
            data = self.session.send(frame)
        except LocalProtocolError as exc:  # the connector's goaway crossed our pick
            raise LinkGone(self.name) from exc
        self._streams[stream_id] = channel
        self._enqueue(data)
        return stream_id

    async def send_body(self, stream_id: int, body: bytes) -> None:
        """Send the rest of ``body`` after ``open``, pacing on the writer queue."""
        size = len(body)
        for offset in range(BODY_CHUNK_BYTES, size, BODY_CHUNK_BYTES):
            while self._out_bytes > _OUT_HIGH_WATER and not self.closed:
                self._drained.clear()
                await self._drained.wait()
            stream = self.session.streams.get(stream_id)
            if self.closed or stream is None or stream.cancelled:
                return  # ended by the connector, cancelled, or the connection is gone
            end = offset + BODY_CHUNK_BYTES
            frame = Body(stream=stream_id, chunk=body[offset:end], last=end >= size)
            self._enqueue(self.session.send(frame))

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        """``nbytes`` of the stream reached the client: grant credit when due."""
        data = self.session.acknowledge(stream_id, nbytes)
        if data is not None:
            self._enqueue(data)

    def cancel(self, stream_id: int, reason: CancelReason) -> None:
        """Ask the connector to stop a stream (it still answers with ``end``)."""
        if self.closed:
            return
        stream = self.session.streams.get(stream_id)
        if stream is None or stream.cancelled:
            return
        self._enqueue(self.session.send(Cancel(stream=stream_id, reason=int(reason))))

    def detach(self, stream_id: int) -> None:
        """Its request is done with the stream: drop further frames (the slot stays taken
        until the connector ends the stream)."""
        if stream_id in self._streams:
            self._streams[stream_id] = None

    def go_away(self, reason: str = "shutdown") -> None:
        """No new streams on this link; in-flight ones finish."""
        self.accepting = False
        if not self.closed and not self.session.local_goaway:
            self._enqueue(self.session.send(GoAway(reason=reason)))

    # -- receiving --------------------------------------------------------------------------

    def feed(self, message: bytes) -> None:
        """Handle one binary message from the connector (``RemoteProtocolError`` if bad)."""
        try:
            frame = self.session.receive(message)
        except RemoteProtocolError as err:
            self._blame(message, err)
            raise
        if type(frame) is Data:
            channel = self._streams[frame.stream]
            if channel is not None and channel.offer(frame):
                self._dirty.append(channel)
                if self._flush_handle is None:
                    self._flush_handle = self._loop.call_soon(self._flush)
        elif isinstance(frame, Head):
            channel = self._streams[frame.stream]
            if channel is not None:
                channel.push(frame)
        elif isinstance(frame, End):
            channel = self._streams.pop(frame.stream)
            if channel is not None:
                channel.push(frame)
            self._on_release(self)
        elif isinstance(frame, Models):
            self._on_models(self, frame.models)
        elif isinstance(frame, GoAway):
            self.accepting = False

    def _blame(self, message: bytes, err: RemoteProtocolError) -> None:
        """The stream a protocol-breaking frame was for (if any) ends with ``Broken``, a
        502 that is not retried elsewhere, instead of the ``LOST`` every other stream on
        the closing link gets. Only on this error path is the message decoded twice."""
        try:
            stream_id = getattr(decode(message), "stream", None)
        except ProtocolError:
            return
        if not isinstance(stream_id, int):
            return
        channel = self._streams.get(stream_id)
        if channel is not None:
            self._streams[stream_id] = None  # still released by ``lost``, not told twice
            channel.push(Broken(err.message[:160]))

    def _flush(self) -> None:
        """Write what this batch of frames staged: one write per stream, not per chunk."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for channel in dirty:
            channel.flush()

    def lost(self) -> None:
        """The connection is gone: every open stream ends with ``LOST``; idempotent.

        Remove the link from the registry first, so the released slots are not handed to
        queued requests.
        """
        if self.closed:
            return
        self.closed = True
        self.accepting = False
        self.session.connection_lost()
        streams, self._streams = self._streams, {}
        for channel in streams.values():
            if channel is not None:
                channel.push(LOST)
            self._on_release(self)
        self._out.clear()
        self._out_bytes = 0
        self._wake.set()
        self._drained.set()
