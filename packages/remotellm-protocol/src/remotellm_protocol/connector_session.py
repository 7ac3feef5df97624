"""The connector's side of a relay connection (see ``session`` for the shared rules)."""

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
from remotellm_protocol.streams import Stream, StreamEvent

__all__ = ["ConnectorSession"]


class ConnectorSession(_Session):
    """The connector's side: sends ``hello``, serves streams the broker opens."""

    def __init__(self) -> None:
        super().__init__()
        self.hello_sent = False
        self.session_id: str | None = None
        self.heartbeat_s: float | None = None
        self.max_frame_bytes = HELLO_MAX_FRAME_BYTES

    def send(self, frame: Frame) -> bytes:
        """Validate ``frame`` against the state, apply it, and return its encoding."""
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError(f"{_tag(frame)} after the connection was closed")
        data = self._encode(frame)
        match frame:
            case Hello():
                if self.hello_sent:
                    raise LocalProtocolError("hello sent twice")
                _check_hello(LocalProtocolError, frame)
                self.hello_sent = True
                self.max_streams = frame.max_streams
            case Models():
                if not self.hello_sent:
                    raise LocalProtocolError("models before hello")
            case Head():
                self._require_open(LocalProtocolError, frame)
                self._head(LocalProtocolError, frame)
            case Data():
                self._require_open(LocalProtocolError, frame)
                self._data(LocalProtocolError, frame)
            case End():
                self._require_open(LocalProtocolError, frame)
                self._end(LocalProtocolError, frame)
            case GoAway():
                self._require_open(LocalProtocolError, frame)
                self.local_goaway = True
            case _:
                raise LocalProtocolError(f"a connector never sends {_tag(frame)}")
        return data

    def receive(self, data: bytes) -> Frame:
        """Decode and validate one message from the broker; return the frame."""
        frame = self._decode(data)
        if self.state is SessionState.HANDSHAKE:
            return self._welcome(frame)
        match frame:
            case Open():
                if self.remote_goaway:
                    raise RemoteProtocolError("open after the broker's goaway")
                self._open(RemoteProtocolError, frame)
            case Body():
                stream = self._tolerant(frame)
                if stream is not None:
                    if stream.cancelled:
                        raise RemoteProtocolError(f"body on cancelled stream {frame.stream}")
                    event = StreamEvent.BODY_LAST if frame.last else StreamEvent.BODY
                    self._apply(RemoteProtocolError, stream, event)
            case Credit():
                stream = self._tolerant(frame)
                if stream is not None:
                    _check_credit(RemoteProtocolError, stream, frame)
                    self._apply(RemoteProtocolError, stream, StreamEvent.CREDIT)
                    stream.credited = frame.delivered
            case Cancel():
                stream = self._tolerant(frame)
                if stream is not None:
                    self._apply(RemoteProtocolError, stream, StreamEvent.CANCEL)
            case GoAway():
                self.remote_goaway = True
            case _:
                raise RemoteProtocolError(f"a broker never sends {_tag(frame)} here")
        return frame

    def _welcome(self, frame: Frame) -> Frame:
        if not self.hello_sent:
            raise RemoteProtocolError(f"{_tag(frame)} before hello was sent")
        if not isinstance(frame, Welcome):
            raise RemoteProtocolError(f"expected welcome, got {_tag(frame)}")
        _check_welcome(RemoteProtocolError, frame)
        self.state = SessionState.OPEN
        self.session_id = frame.session_id
        self.max_frame_bytes = frame.max_frame_bytes
        self.window = frame.initial_window
        self.heartbeat_s = frame.heartbeat_s
        return frame

    def _tolerant(self, frame: Body | Credit | Cancel) -> Stream | None:
        """The stream of a broker frame that may legally cross this side's ``end`` on the
        wire: None if the stream is finished (the frame is then dropped)."""
        stream = self.streams.get(frame.stream)
        if stream is None and not 0 < frame.stream <= self.last_stream_id:
            raise RemoteProtocolError(f"{_tag(frame)} for unknown stream {frame.stream}")
        return stream
