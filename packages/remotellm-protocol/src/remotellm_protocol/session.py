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

Both sides check every frame against the same rule (``rules.RULES``, which does not know
which role we play), so whatever one side's ``send`` accepts, the other side's ``receive``
accepts too. ``send`` encodes (and checks the frame size) before it changes
any state: a ``LocalProtocolError`` always leaves the session as it was.
"""

from enum import Enum, auto

from remotellm_protocol.codec import decode, encode
from remotellm_protocol.codes import CloseCode
from remotellm_protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from remotellm_protocol.frames import (
    Body,
    Cancel,
    Credit,
    Data,
    End,
    Ended,
    Frame,
    GoAway,
    Head,
    HeldStream,
    Hello,
    Open,
    ResumedStream,
    Welcome,
)
from remotellm_protocol.limits import (
    DEFAULT_STREAM_WINDOW,
    HELLO_MAX_FRAME_BYTES,
    MAX_STREAM_ID,
)
from remotellm_protocol.resume import Suspended, refusal, replay, replay_body, restore
from remotellm_protocol.rules import (
    RESPONSE_STATUSES,
    RULES,
    Role,
    Rule,
    check_hello,
    check_welcome,
    handshake_refusal,
    tag,
)
from remotellm_protocol.streams import Stream, StreamState

__all__ = ["RESPONSE_STATUSES", "SessionState"]

#: Bytes of msgpack around the chunk of a ``data`` frame with a large stream id (measured
#: upper bound: map header, tag, two keys, int, bin32 header).
DATA_FRAME_OVERHEAD = 40


#: The frames about one stream.
STREAM_FRAMES = (Body, Head, Data, End, Credit, Cancel)


class SessionState(Enum):
    HANDSHAKE = auto()
    OPEN = auto()
    CLOSED = auto()


class Session:
    """One side of a relay connection; ``role`` says which. ``ConnectorSession`` and
    ``BrokerSession`` add what only one role needs."""

    def __init__(self, role: Role, resume: Suspended | None = None) -> None:
        self.role = role
        #: The streams of a dropped connection this one resumes (``ConnectorSession``
        #: takes them at once, ``BrokerSession.restore`` once ``hello`` names them).
        self.suspended = resume
        #: Both sides showed support for resumption (``hello.resumable`` and a
        #: ``welcome.resume_token``): payloads are kept for a replay, ``ended`` is sent.
        self.resumable = False
        #: Streams whose ``end`` went by on a resumable connection and that ``ended`` has
        #: not yet confirmed.
        self.ended: dict[int, Stream] = {}
        #: After a resume: ids of the suspended streams that did not continue.
        self.resume_dropped: list[int] = []
        self._replays: dict[int, list[Frame]] = {}
        self.state = SessionState.HANDSHAKE
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        self.max_frame_bytes = HELLO_MAX_FRAME_BYTES
        self.window = DEFAULT_STREAM_WINDOW
        self.max_streams = 0
        #: The ``hello`` of this connection, once sent (connector) or received (broker).
        self.hello: Hello | None = None
        #: The ``welcome`` of this connection, once sent (broker) or received (connector).
        self.welcome: Welcome | None = None
        #: This side sent ``goaway``.
        self.local_goaway = False
        #: The peer sent ``goaway``.
        self.remote_goaway = False

    # -- the two directions ------------------------------------------------------------------

    def send(self, frame: Frame) -> bytes:
        """Validate ``frame`` against the state, apply it, and return its encoding."""
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError(f"{tag(frame)} after the connection was closed")
        data = self._encode(frame)
        self._process(frame, sending=True)
        return data

    def receive(self, data: bytes) -> Frame:
        """Decode and validate one message from the peer; return the frame."""
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError("receive after the connection was closed")
        frame = decode(data, max_size=self.max_frame_bytes)
        self._process(frame, sending=False)
        return frame

    def _process(self, frame: Frame, *, sending: bool) -> None:
        """Check ``frame`` against its rule, then apply it. Every check comes before the
        first change, so a refused frame leaves the session as it was."""
        error: type[ProtocolError] = LocalProtocolError if sending else RemoteProtocolError
        sender = self.role if sending else self.role.peer
        rule = RULES[type(frame)]
        self._check_phase(rule, frame, sender, sending, error)
        if rule.event is None:
            self._apply_connection_frame(frame, sending, error)
            return
        assert isinstance(frame, STREAM_FRAMES)  # the frames with a stream event
        stream_id = frame.stream
        stream = self.streams.get(stream_id)
        if stream is None:
            known = 0 < stream_id <= self.last_stream_id
            if known and rule.crosses_end and not sending:
                return  # crossed our end on the wire: dropped
            what = "finished" if known else "unknown"
            raise error(f"{tag(frame)} for {what} stream {stream_id}")
        event = rule.event(frame)
        problem = stream.refusal(event) or (rule.check and rule.check(stream, frame))
        if problem:
            raise error(problem)
        stream.transition(event)
        self._apply_stream_frame(stream, frame, sending)
        if stream.state is StreamState.CLOSED:
            del self.streams[stream.id]

    def _check_phase(
        self, rule: Rule, frame: Frame, sender: Role, sending: bool, error: type[ProtocolError]
    ) -> None:
        if self.state is SessionState.HANDSHAKE:
            hello_seen = self.hello is not None
            allowed = rule.sender is sender and (
                (rule.handshake == "first" and not hello_seen)
                or (rule.handshake == "after-hello" and hello_seen)
            )
            if not allowed:
                raise error(
                    handshake_refusal(tag(frame), sender, hello_seen=hello_seen, sending=sending)
                )
            return
        if rule.sender not in (None, sender):
            raise error(f"a {sender.value} never sends {tag(frame)}")
        if not rule.when_open:
            raise error(f"a {sender.value} never sends {tag(frame)} here (it comes once)")

    def _apply_connection_frame(
        self, frame: Frame, sending: bool, error: type[ProtocolError]
    ) -> None:
        match frame:
            case Hello():
                problem = check_hello(frame) or (sending and self._resuming_hello(frame))
                if problem:
                    raise error(problem)
                self.hello = frame
                self.max_streams = frame.max_streams
            case Welcome():
                problem = check_welcome(frame)
                if problem:
                    raise error(problem)
                plan = self._resume_plan(frame, error)
                self.welcome = frame
                self.state = SessionState.OPEN
                self.max_frame_bytes = frame.max_frame_bytes
                self.window = frame.initial_window
                assert self.hello is not None
                self.resumable = self.hello.resumable and frame.resume_token is not None
                self._resume(plan)
            case Ended():
                if not self.resumable or frame.stream not in self.ended:
                    raise error(f"ended for stream {frame.stream}, whose end awaits no ended")
                del self.ended[frame.stream]
            case Open():
                self._open(frame, sending, error)
            case GoAway():
                if sending:
                    self.local_goaway = True
                else:
                    self.remote_goaway = True
            case _:  # models: nothing to remember
                pass

    def _open(self, frame: Open, sending: bool, error: type[ProtocolError]) -> None:
        sender_goaway = self.local_goaway if sending else self.remote_goaway
        receiver_goaway = self.remote_goaway if sending else False  # an open may cross it
        if sender_goaway or receiver_goaway:
            raise error("open after goaway" if sending else "open after the broker's goaway")
        if frame.stream <= self.last_stream_id:
            raise error(f"open reuses stream id {frame.stream}")
        if frame.stream > MAX_STREAM_ID:
            raise error(f"open with stream id {frame.stream} beyond {MAX_STREAM_ID}")
        if len(self.streams) >= self.max_streams:
            raise error(f"open exceeds the connector's limit of {self.max_streams} streams")
        self.last_stream_id = frame.stream
        stream = Stream(frame.stream, self.window, more_body=frame.more_body)
        stream.body = len(frame.body)
        if sending and self.resumable:
            stream.kept += frame.body
        self.streams[frame.stream] = stream

    def _apply_stream_frame(self, stream: Stream, frame: Frame, sending: bool) -> None:
        keep = sending and self.resumable  # the sender keeps what it may have to replay
        match frame:
            case Body():
                stream.body += len(frame.chunk)
                stream.body_done = frame.last
                if keep:
                    stream.kept += frame.chunk
            case Head():  # the whole body came: it needs keeping no longer
                stream.head_seen, stream.kept, stream.kept_from = True, bytearray(), 0
                stream.head = frame if keep else None
            case Data():
                stream.sent += len(frame.chunk)
                if keep:
                    stream.kept += frame.chunk
            case Credit():
                stream.credited = frame.delivered
                stream.delivered = max(stream.delivered, frame.delivered)
                if stream.head_seen:
                    del stream.kept[: frame.delivered - stream.kept_from]
                    stream.kept_from = frame.delivered
            case End():
                stream.end = frame if keep else None
                if self.resumable:
                    self.ended[stream.id] = stream
            case _:  # cancel: the stream's flag says it all
                pass

    # -- resumption (see ``resume``) -----------------------------------------------------------

    def _resuming_hello(self, hello: Hello) -> str | None:
        """Why the connector may not send this resuming ``hello``, or None."""
        if hello.resume_token is None:
            return None
        if self.suspended is None or hello.resume_token != self.suspended.token:
            return "hello.resume_token is not the token of the suspended streams"
        if not hello.resumable or hello.streams != self.suspended.held():
            return "a resuming hello is resumable and lists the suspended streams"
        return None

    def _resume_plan(
        self, welcome: Welcome, error: type[ProtocolError]
    ) -> list[tuple[Stream, HeldStream, ResumedStream]]:
        """Check the resume ``welcome`` announces against both sides' streams; change
        nothing. The streams that continue, with the two sides' offsets."""
        assert self.hello is not None
        if welcome.resume_token is not None and not self.hello.resumable:
            raise error("welcome offers a resume token to a connector that cannot resume")
        if not (self.hello.resumable and self.hello.resume_token is not None):
            if welcome.streams:
                raise error("welcome resumes streams, but hello resumed nothing")
            return []
        if self.suspended is None:
            raise error("welcome to a resuming hello before restore(): restore or refuse it")
        held = {h.stream: h for h in self.hello.streams}
        plan: list[tuple[Stream, HeldStream, ResumedStream]] = []
        for resumed in welcome.streams:
            stream = self.suspended.streams.get(resumed.stream)
            offer = held.pop(resumed.stream, None)
            if stream is None or offer is None:
                raise error(f"welcome resumes stream {resumed.stream}, not held on both sides")
            problem = refusal(stream, offer, resumed)
            if problem:
                raise error(problem)
            plan.append((stream, offer, resumed))
        return plan

    def _resume(self, plan: list[tuple[Stream, HeldStream, ResumedStream]]) -> None:
        if self.suspended is None:
            return
        for stream, held, resumed in plan:
            if self.role is Role.CONNECTOR:
                before = stream.kept[resumed.received - stream.kept_from :]
                frames = replay(stream, bytes(before), resumed, self.max_data_chunk)
            else:
                before = bytearray() if held.body_done else stream.kept[held.body :]
                had_last = stream.body_done and not held.body_done
                frames = replay_body(stream, bytes(before), had_last, self.max_data_chunk)
            restore(stream, held, resumed)
            self.streams[stream.id] = stream
            self._replays[stream.id] = frames
        self.resume_dropped = sorted(set(self.suspended.streams) - set(self.streams))
        self.last_stream_id = self.suspended.last_stream_id
        self.suspended.used = True
        self.suspended = None

    def _encode(self, frame: Frame) -> bytes:
        data = encode(frame)
        if len(data) > self.max_frame_bytes:
            raise LocalProtocolError(
                f"{tag(frame)} frame of {len(data)} bytes exceeds the limit of "
                f"{self.max_frame_bytes}",
                CloseCode.MESSAGE_TOO_BIG,
            )
        return data

    # -- public -----------------------------------------------------------------------------

    @property
    def max_data_chunk(self) -> int:
        """The largest ``data`` chunk that fits one frame (a window may allow less)."""
        return self.max_frame_bytes - DATA_FRAME_OVERHEAD

    def available(self, stream_id: int) -> int:
        """Response bytes the connector may still send on ``stream_id`` before new credit."""
        stream = self.streams.get(stream_id)
        return 0 if stream is None else max(stream.available, 0)

    def replay(self, stream_id: int) -> list[Frame]:
        """After a resume: the frames to send again on ``stream_id``, in order and before
        anything new on it (each once: a second call returns [])."""
        return self._replays.pop(stream_id, [])

    def suspend(self) -> Suspended:
        """The link dropped on a resumable connection: close the session like
        ``connection_lost`` and return what the next connection needs to resume."""
        if not self.resumable or self.welcome is None or self.welcome.resume_token is None:
            raise LocalProtocolError("suspend on a connection that is not resumable")
        kept = dict(self.streams) | {i: s for i, s in self.ended.items() if s.end is not None}
        suspended = Suspended(
            self.welcome.resume_token, self.welcome.resume_window_s, self.last_stream_id, kept
        )
        self.connection_lost()
        return suspended

    def connection_lost(self) -> list[int]:
        """The connection is gone: close the session; return the ids of the streams lost."""
        lost = sorted(self.streams)
        self.streams.clear()
        self.ended.clear()
        self._replays.clear()
        self.state = SessionState.CLOSED
        return lost
