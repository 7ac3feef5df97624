"""The broker's side of a relay connection (see ``session`` for the shared rules)."""

from remotellm_protocol.codes import CancelReason
from remotellm_protocol.errors import LocalProtocolError
from remotellm_protocol.frames import Cancel, Credit
from remotellm_protocol.rules import Role
from remotellm_protocol.session import Session

__all__ = ["BrokerSession"]


class BrokerSession(Session):
    """The broker's side: answers ``hello``, opens streams, grants credit."""

    def __init__(self) -> None:
        super().__init__(Role.BROKER)

    def next_stream_id(self) -> int:
        """The id to give the next ``open``."""
        return self.last_stream_id + 1

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
