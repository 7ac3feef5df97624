"""Test helpers: a connector session and a broker session joined in memory, and the
conformance vectors.

For our tests and for third-party connector authors::

    pair = SessionPair.handshaken(models=[ModelInfo(id="m")])
    opened = pair.open_stream(body=b'{"model": "m"}')    # the Open the connector received
    pair.connector_sends(Head(stream=opened.stream, status=200))

Each ``*_sends`` encodes with the sender's session and feeds the bytes to the receiver's,
so both state machines check every frame exactly as they would over a WebSocket.
``vectors_path()`` is the directory of conformance vectors (docs/protocol.md, "Conformance").
"""

from collections.abc import Sequence
from pathlib import Path

from remotellm_protocol.broker_session import BrokerSession
from remotellm_protocol.connector_session import ConnectorSession
from remotellm_protocol.frames import (
    Frame,
    Hello,
    ModelInfo,
    Open,
    Principal,
    ResumedStream,
    Welcome,
)
from remotellm_protocol.limits import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_RESUME_WINDOW_S,
    DEFAULT_STREAM_WINDOW,
)
from remotellm_protocol.resume import Suspended

__all__ = ["TEST_PRINCIPAL", "SessionPair", "vectors_path"]

#: A principal for tests that need one.
TEST_PRINCIPAL = Principal(user_id="u-test", key_id="k-test")


class SessionPair:
    """A ``ConnectorSession`` and a ``BrokerSession`` wired back to back."""

    def __init__(self) -> None:
        self.connector = ConnectorSession()
        self.broker = BrokerSession()
        #: Every frame delivered, in order, as ``(sender, frame)``.
        self.log: list[tuple[str, Frame]] = []
        self._tokens = 0

    @classmethod
    def handshaken(
        cls,
        *,
        models: Sequence[ModelInfo] = (),
        max_streams: int = 16,
        window: int = DEFAULT_STREAM_WINDOW,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        resumable: bool = False,
    ) -> "SessionPair":
        """A pair that has already exchanged ``hello`` and ``welcome``; ``resumable``: both
        sides support resumption (see ``resume``)."""
        pair = cls()
        pair.connector_sends(
            Hello(
                name="test",
                version="0",
                models=list(models),
                max_streams=max_streams,
                resumable=resumable,
            )
        )
        pair.broker_sends(pair._welcome(max_frame_bytes, window, resumable=resumable))
        return pair

    def resume(
        self, *, broker_side: Suspended | bool | None = True, max_frame_bytes: int | None = None
    ) -> "SessionPair":
        """The link drops and the connector reconnects: a new pair that resumes this one's
        streams (``hello`` with the resume token, ``welcome`` with the offsets).

        Frames sent with ``connector.send``/``broker.send`` alone were lost in flight.
        ``broker_side``: what the broker found for the token (True: this pair's broker's
        streams; None: nothing, as after a broker restart, which raises the
        ``RemoteProtocolError`` with ``RESUME_REFUSED`` the broker closes with).
        """
        held = self.connector.suspend()
        kept = self.broker.suspend()
        found = kept if broker_side is True else broker_side or None
        pair = SessionPair()
        pair.connector = ConnectorSession(resume=held)
        pair.log = self.log
        pair.connector_sends(
            Hello(
                name="test",
                version="0",
                max_streams=self.connector.max_streams,
                resumable=True,
                resume_token=held.token,
                streams=held.held(),
            )
        )
        streams = pair.broker.restore(found)
        frame_limit = max_frame_bytes or self.broker.max_frame_bytes
        pair.broker_sends(
            pair._welcome(frame_limit, self.broker.window, resumable=True, streams=streams)
        )
        return pair

    def replay(self) -> None:
        """Send both sides' replay frames after ``resume``: the broker's request bodies,
        then the connector's heads, responses and ends."""
        for stream in sorted(self.broker.streams):
            for frame in self.broker.replay(stream):
                self.broker_sends(frame)
        for stream in sorted(self.connector.streams):
            for frame in self.connector.replay(stream):
                self.connector_sends(frame)

    def _welcome(
        self,
        max_frame_bytes: int,
        window: int,
        *,
        resumable: bool,
        streams: Sequence[ResumedStream] = (),
    ) -> Welcome:
        self._tokens += 1
        return Welcome(
            session_id=f"s-test-{self._tokens}",
            max_frame_bytes=max_frame_bytes,
            initial_window=window,
            heartbeat_s=DEFAULT_HEARTBEAT_S,
            resume_token=f"r-test-{self._tokens}" if resumable else None,
            resume_window_s=DEFAULT_RESUME_WINDOW_S if resumable else 0.0,
            streams=list(streams),
        )

    def connector_sends(self, frame: Frame) -> Frame:
        """Send ``frame`` from the connector; return it as the broker received it."""
        received = self.broker.receive(self.connector.send(frame))
        self.log.append(("connector", received))
        return received

    def broker_sends(self, frame: Frame) -> Frame:
        """Send ``frame`` from the broker; return it as the connector received it."""
        received = self.connector.receive(self.broker.send(frame))
        self.log.append(("broker", received))
        return received

    def open_stream(
        self,
        *,
        body: bytes = b"",
        more_body: bool = False,
        path: str = "/v1/chat/completions",
        headers: Sequence[tuple[str, str]] = (("content-type", "application/json"),),
        principal: Principal = TEST_PRINCIPAL,
        deadline_ms: int | None = None,
    ) -> Open:
        """Open the broker's next stream (a POST); return the ``open`` the connector got."""
        stream = self.broker.next_stream_id()
        received = self.broker_sends(
            Open(
                stream=stream,
                correlation_id=f"req-{stream}",
                method="POST",
                path=path,
                principal=principal,
                headers=list(headers),
                deadline_ms=deadline_ms,
                body=body,
                more_body=more_body,
            )
        )
        assert isinstance(received, Open)
        return received


def vectors_path() -> Path:
    """The directory of conformance vectors: ``valid/``, ``invalid/`` and ``sequences/``."""
    return _find_vectors(Path(__file__).resolve().parent)


def _find_vectors(package_dir: Path) -> Path:
    # In a wheel the vectors sit inside the package; in a source checkout (an editable
    # install) they sit next to src/, at the root of the distribution.
    for candidate in (package_dir / "vectors", package_dir.parents[1] / "vectors"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no conformance vectors near {package_dir}")
