"""What both per-connection state machines share (``ConnectorSession`` in
``connector_session``, ``BrokerSession`` in ``broker_session``).

Sans-I/O: a session never touches a socket. The I/O layer hands it every binary WebSocket
message it receives and sends every message it returns::

    frame = session.receive(message)     # validated frame, or RemoteProtocolError
    message = session.send(frame)        # encoded frame, or LocalProtocolError
    lost = session.connection_lost()     # ids of the streams that died with the socket

There is no byte buffer to feed: WebSocket already delimits messages, and each carries exactly
one frame. ``receive`` returns the frame itself as the event (frames are frozen values).

Frames the broker sends for a stream the connector has just ended (``body``, ``credit``,
``cancel`` crossing the ``end`` on the wire) are legal and reach the connector as-is; the
connector has no task for them and drops them. Every other frame for an unknown or finished
stream is a protocol error.

Both sides check every frame the same way, so whatever one side's ``send`` accepts, the other
side's ``receive`` accepts too. ``send`` encodes (and checks the frame size) before it changes
any state: a ``LocalProtocolError`` always leaves the session as it was.
"""

from enum import Enum, auto

from remotellm_protocol.codec import decode, encode
from remotellm_protocol.codes import CloseCode
from remotellm_protocol.errors import LocalProtocolError, ProtocolError
from remotellm_protocol.frames import (
    Credit,
    Data,
    End,
    Frame,
    Head,
    Hello,
    Open,
    Welcome,
)
from remotellm_protocol.limits import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_STREAM_WINDOW,
    MAX_STREAM_ID,
    MIN_MAX_FRAME_BYTES,
)
from remotellm_protocol.streams import Stream, StreamEvent, StreamState

__all__ = ["RESPONSE_STATUSES", "SessionState"]

#: Bytes of msgpack around the chunk of a ``data`` frame with a large stream id (measured
#: upper bound: map header, tag, two keys, int, bin32 header).
DATA_FRAME_OVERHEAD = 40

#: Longest connector name (``hello.name``): it shows up in logs, metrics and the portal.
MAX_NAME_LENGTH = 128

#: HTTP statuses a ``head`` may carry: final statuses whose response has a body. 1xx are
#: interim (101 would switch the client's connection to another protocol) and 204, 205 and
#: 304 never carry content (RFC 9110 §15), so a body relayed after one of them would reach
#: the client as the start of a second, forged response on the same connection.
RESPONSE_STATUSES = frozenset(range(200, 600)) - {204, 205, 304}


class SessionState(Enum):
    HANDSHAKE = auto()
    OPEN = auto()
    CLOSED = auto()


_ErrorType = type[ProtocolError]


class _Session:
    """What both roles share: the stream table, goaway flags, limits and the close."""

    def __init__(self) -> None:
        self.state = SessionState.HANDSHAKE
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        self.max_frame_bytes = DEFAULT_MAX_FRAME_BYTES
        self.window = DEFAULT_STREAM_WINDOW
        self.max_streams = 0
        #: This side sent ``goaway``.
        self.local_goaway = False
        #: The peer sent ``goaway``.
        self.remote_goaway = False

    # -- helpers shared by both directions -------------------------------------------------

    def _require_open(self, error: _ErrorType, frame: Frame) -> None:
        if self.state is not SessionState.OPEN:
            raise error(f"{_tag(frame)} not allowed in session state {self.state.name}")

    def _stream(self, error: _ErrorType, stream_id: int, frame: Frame) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None:
            what = "finished" if 0 < stream_id <= self.last_stream_id else "unknown"
            raise error(f"{_tag(frame)} for {what} stream {stream_id}")
        return stream

    def _apply(self, error: _ErrorType, stream: Stream, event: StreamEvent) -> None:
        problem = stream.transition(event)
        if problem is not None:
            raise error(problem)
        if stream.state is StreamState.CLOSED:
            del self.streams[stream.id]

    def _open(self, error: _ErrorType, frame: Open) -> None:
        if frame.stream <= self.last_stream_id:
            raise error(f"open reuses stream id {frame.stream}")
        if frame.stream > MAX_STREAM_ID:
            raise error(f"open with stream id {frame.stream} beyond {MAX_STREAM_ID}")
        if len(self.streams) >= self.max_streams:
            raise error(f"open exceeds the connector's limit of {self.max_streams} streams")
        self.last_stream_id = frame.stream
        self.streams[frame.stream] = Stream(frame.stream, self.window, more_body=frame.more_body)

    def _head(self, error: _ErrorType, frame: Head) -> None:
        stream = self._stream(error, frame.stream, frame)
        if frame.status not in RESPONSE_STATUSES:
            raise error(
                f"head on stream {frame.stream} has status {frame.status} (a final status "
                "that carries a body is required: 200-599 but 204, 205, 304)"
            )
        self._apply(error, stream, StreamEvent.HEAD)

    def _data(self, error: _ErrorType, frame: Data) -> None:
        stream = self._stream(error, frame.stream, frame)
        self._apply(error, stream, StreamEvent.DATA)  # head before data (a self-loop)
        if len(frame.chunk) > stream.available:
            raise error(
                f"data of {len(frame.chunk)} bytes on stream {frame.stream} exceeds the "
                f"{stream.available} bytes of credit left"
            )
        stream.sent += len(frame.chunk)

    def _end(self, error: _ErrorType, frame: End) -> None:
        stream = self._stream(error, frame.stream, frame)
        event = StreamEvent.END_OK if frame.error is None else StreamEvent.END_ERROR
        self._apply(error, stream, event)

    def _encode(self, frame: Frame) -> bytes:
        data = encode(frame)
        if len(data) > self.max_frame_bytes:
            raise LocalProtocolError(
                f"{_tag(frame)} frame of {len(data)} bytes exceeds the limit of "
                f"{self.max_frame_bytes}",
                CloseCode.MESSAGE_TOO_BIG,
            )
        return data

    def _decode(self, data: bytes) -> Frame:
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError("receive after the connection was closed")
        return decode(data, max_size=self.max_frame_bytes)

    # -- public -----------------------------------------------------------------------------

    @property
    def max_data_chunk(self) -> int:
        """The largest ``data`` chunk that fits one frame (a window may allow less)."""
        return self.max_frame_bytes - DATA_FRAME_OVERHEAD

    def available(self, stream_id: int) -> int:
        """Response bytes the connector may still send on ``stream_id`` before new credit."""
        stream = self.streams.get(stream_id)
        return 0 if stream is None else max(stream.available, 0)

    def connection_lost(self) -> list[int]:
        """The connection is gone: close the session; return the ids of the streams lost."""
        lost = sorted(self.streams)
        self.streams.clear()
        self.state = SessionState.CLOSED
        return lost


def _check_hello(error: _ErrorType, frame: Hello) -> None:
    if frame.max_streams < 1:
        raise error("hello.max_streams must be at least 1")
    if not 0 < len(frame.name) <= MAX_NAME_LENGTH or not frame.name.isprintable():
        raise error(f"hello.name must be 1 to {MAX_NAME_LENGTH} printable characters")


def _check_welcome(error: _ErrorType, frame: Welcome) -> None:
    if frame.max_frame_bytes < MIN_MAX_FRAME_BYTES or frame.initial_window < 1:
        raise error(
            f"welcome announces unusable limits (max_frame_bytes={frame.max_frame_bytes}, "
            f"initial_window={frame.initial_window})"
        )


def _check_credit(error: _ErrorType, stream: Stream, frame: Credit) -> None:
    """Credit is cumulative: it never moves backwards, nor past the bytes sent."""
    if not stream.credited <= frame.delivered <= stream.sent:
        raise error(
            f"credit {frame.delivered} on stream {frame.stream} outside "
            f"[{stream.credited}, {stream.sent}]"
        )


def _tag(frame: Frame) -> str:
    return str(type(frame).__struct_config__.tag)
