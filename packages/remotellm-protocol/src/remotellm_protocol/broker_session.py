"""The broker's side of a relay connection (see ``session`` for the shared rules)."""

from remotellm_protocol.codes import CancelReason
from remotellm_protocol.errors import LocalProtocolError, RemoteProtocolError
from remotellm_protocol.frames import (
    Body,
    Cancel,
    Credit,
    Data,
    End,
    Frame,
    GoAway,
    Head,
    Hello,
    Models,
    Open,
    Welcome,
)
from remotellm_protocol.limits import HELLO_MAX_FRAME_BYTES
from remotellm_protocol.session import (
    SessionState,
    _check_credit,
    _check_hello,
    _check_welcome,
    _Session,
    _tag,
)
from remotellm_protocol.streams import StreamEvent

__all__ = ["BrokerSession"]


class BrokerSession(_Session):
    """The broker's side: answers ``hello``, opens streams, grants credit."""

    def __init__(self) -> None:
        super().__init__()
        self.max_frame_bytes = HELLO_MAX_FRAME_BYTES
        self.hello: Hello | None = None

    def next_stream_id(self) -> int:
        """The id to give the next ``open``."""
        return self.last_stream_id + 1

    def send(self, frame: Frame) -> bytes:
        """Validate ``frame`` against the state, apply it, and return its encoding."""
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError(f"{_tag(frame)} after the connection was closed")
        data = self._encode(frame)
        if self.state is SessionState.HANDSHAKE:
            if self.hello is None or not isinstance(frame, Welcome):
                raise LocalProtocolError(f"{_tag(frame)} before hello/welcome")
            _check_welcome(LocalProtocolError, frame)
            self.state = SessionState.OPEN
            self.max_frame_bytes = frame.max_frame_bytes
            self.window = frame.initial_window
            return data
        match frame:
            case Open():
                if self.local_goaway or self.remote_goaway:
                    raise LocalProtocolError("open after goaway")
                self._open(LocalProtocolError, frame)
            case Body():
                stream = self._stream(LocalProtocolError, frame.stream, frame)
                if stream.cancelled:
                    raise LocalProtocolError(f"body on cancelled stream {frame.stream}")
                event = StreamEvent.BODY_LAST if frame.last else StreamEvent.BODY
                self._apply(LocalProtocolError, stream, event)
            case Credit():
                stream = self._stream(LocalProtocolError, frame.stream, frame)
                _check_credit(LocalProtocolError, stream, frame)
                self._apply(LocalProtocolError, stream, StreamEvent.CREDIT)
                stream.credited = frame.delivered
                stream.delivered = max(stream.delivered, frame.delivered)
            case Cancel():
                stream = self._stream(LocalProtocolError, frame.stream, frame)
                self._apply(LocalProtocolError, stream, StreamEvent.CANCEL)
            case GoAway():
                self.local_goaway = True
            case _:
                raise LocalProtocolError(f"a broker never sends {_tag(frame)}")
        return data

    def receive(self, data: bytes) -> Frame:
        """Decode and validate one message from the connector; return the frame."""
        frame = self._decode(data)
        if self.state is SessionState.HANDSHAKE:
            return self._hello(frame)
        match frame:
            case Models():
                pass
            case Head():
                self._head(RemoteProtocolError, frame)
            case Data():
                self._data(RemoteProtocolError, frame)
            case End():
                self._end(RemoteProtocolError, frame)
            case GoAway():
                self.remote_goaway = True
            case _:
                raise RemoteProtocolError(f"a connector never sends {_tag(frame)}")
        return frame

    def _hello(self, frame: Frame) -> Frame:
        if self.hello is None:
            if not isinstance(frame, Hello):
                raise RemoteProtocolError(f"expected hello, got {_tag(frame)}")
            _check_hello(RemoteProtocolError, frame)
            self.hello = frame
            self.max_streams = frame.max_streams
        elif not isinstance(frame, Models):  # a model list may follow hello at once
            raise RemoteProtocolError(f"{_tag(frame)} before welcome")
        return frame

    def acknowledge(self, stream_id: int, nbytes: int) -> bytes | None:
        """Record ``nbytes`` more delivered to the client; return a ``credit`` message when
        enough has accumulated to be worth one (a quarter of the window), else None.

        Sending credit in batches saves three frames in four without ever stalling the
        connector: it only waits with a full window unacknowledged, and once the broker has
        delivered that window it is owed a whole window, more than a quarter. Streams that
        are finished or cancelled need no credit: None.
        """
        if nbytes < 0:
            raise LocalProtocolError(f"acknowledge of {nbytes} bytes")
        stream = self.streams.get(stream_id)
        if stream is None or stream.cancelled:
            return None
        stream.delivered = min(stream.delivered + nbytes, stream.sent)
        owed = stream.delivered - stream.credited
        if owed <= 0 or owed < self.window // 4:
            return None
        return self.send(Credit(stream=stream_id, delivered=stream.delivered))

    def cancel(self, stream_id: int, reason: CancelReason) -> bytes | None:
        """A ``cancel`` message for ``stream_id``, or None when the stream has already ended
        or been cancelled: an API client often leaves just as the connector's ``end``
        arrives, and that race is no error."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.cancelled:
            return None
        return self.send(Cancel(stream=stream_id, reason=reason))
