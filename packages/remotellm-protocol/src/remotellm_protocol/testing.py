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
from remotellm_protocol.frames import Frame, Hello, ModelInfo, Open, Principal, Welcome
from remotellm_protocol.limits import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_STREAM_WINDOW,
)

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

    @classmethod
    def handshaken(
        cls,
        *,
        models: Sequence[ModelInfo] = (),
        max_streams: int = 16,
        window: int = DEFAULT_STREAM_WINDOW,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> "SessionPair":
        """A pair that has already exchanged ``hello`` and ``welcome``."""
        pair = cls()
        pair.connector_sends(
            Hello(name="test", version="0", models=list(models), max_streams=max_streams)
        )
        pair.broker_sends(
            Welcome(
                session_id="s-test",
                max_frame_bytes=max_frame_bytes,
                initial_window=window,
                heartbeat_s=DEFAULT_HEARTBEAT_S,
            )
        )
        return pair

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
