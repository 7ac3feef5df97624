"""The broker's side of a relay connection (see ``session`` for the shared rules)."""

from remotellm_protocol.codes import CancelReason, CloseCode
from remotellm_protocol.errors import LocalProtocolError, RemoteProtocolError
from remotellm_protocol.frames import Cancel, Credit, ResumedStream
from remotellm_protocol.resume import Suspended, offer, refusal
from remotellm_protocol.rules import Role
from remotellm_protocol.session import Session, SessionState

__all__ = ["BrokerSession"]


class BrokerSession(Session):
    """The broker's side: answers ``hello``, opens streams, grants credit."""

    def __init__(self) -> None:
        super().__init__(Role.BROKER)

    def next_stream_id(self) -> int:
        """The id to give the next ``open``."""
        return self.last_stream_id + 1

    def restore(self, suspended: Suspended | None) -> list[ResumedStream]:
        """Take over the streams of the connection ``hello.resume_token`` names; return the
        ``welcome.streams`` that accept the resume (the streams both sides hold).

        ``suspended`` is what the driver found for the token: None if the token is unknown,
        already used, expired or from before a restart. A token that does not match raises
        ``RemoteProtocolError`` with ``CloseCode.RESUME_REFUSED``: close with it.
        """
        hello = self.hello
        if self.state is not SessionState.HANDSHAKE or hello is None or not hello.resumable:
            raise LocalProtocolError("restore needs a resumable hello, before welcome")
        if suspended is None or suspended.used or hello.resume_token != suspended.token:
            raise RemoteProtocolError(
                "hello.resume_token names nothing this broker can resume",
                CloseCode.RESUME_REFUSED,
            )
        held = {h.stream: h for h in hello.streams}
        offers = []
        for stream_id, stream in sorted(suspended.streams.items()):
            if stream_id in held:
                resumed = offer(stream, held[stream_id])
                problem = refusal(stream, held[stream_id], resumed)
                if problem:
                    raise RemoteProtocolError(problem)
                offers.append(resumed)
        self.suspended = suspended
        return offers

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
