"""Stream resumption: what a side keeps when its link drops, and how a stream continues on the
next connection (docs/protocol.md, "Resumption").

Offsets are byte counts from the start of a stream's payload: the request body (``open.body``
then every ``body.chunk``) in one direction, the response (every ``data.chunk``) in the other.
The side that sends a payload keeps the bytes the peer has not acknowledged:

- the connector keeps response bytes from the last ``credit`` on (at most one window), its
  ``head`` and its ``end`` (until ``ended`` confirms it);
- the broker keeps the request body until ``head`` shows the connector had all of it.

On a resume the connector lists in ``hello.streams`` what it holds and how much body it has;
the broker answers in ``welcome.streams`` with what it holds and how much response it has.
A stream on both lists continues with its id: each side replays from the offset the other
reported. A stream on one list only is lost on the side that still had it.
"""

from remotellm_protocol.frames import Body, Data, Frame, HeldStream, ResumedStream
from remotellm_protocol.limits import BODY_CHUNK_BYTES
from remotellm_protocol.streams import Stream, StreamState

__all__ = ["Suspended"]


class Suspended:
    """A side's streams after its link dropped, to resume on the next connection.

    Get one from ``session.suspend()``; hand it to ``ConnectorSession(resume=...)`` or
    ``BrokerSession.restore(...)``. Meanwhile ``available(stream)`` says how many more
    response bytes a connector may read from upstream and keep for that stream.
    """

    def __init__(
        self, token: str, window_s: float, last_stream_id: int, streams: dict[int, Stream]
    ) -> None:
        #: The resume token of the dropped connection's ``welcome``.
        self.token = token
        #: How long the broker keeps the streams (``welcome.resume_window_s``).
        self.window_s = window_s
        self.last_stream_id = last_stream_id
        self.streams = streams
        #: A resume took these streams over: the token may not resume them again.
        self.used = False

    def held(self) -> list[HeldStream]:
        """``hello.streams`` of the resuming connection."""
        return [
            HeldStream(stream=s.id, body=s.body, body_done=s.body_done)
            for s in sorted(self.streams.values(), key=lambda s: s.id)
        ]

    def available(self, stream_id: int) -> int:
        """Response bytes the connector may still produce on ``stream_id`` (its window)."""
        stream = self.streams.get(stream_id)
        return 0 if stream is None else max(stream.available, 0)


def offer(stream: Stream, held: HeldStream) -> ResumedStream:
    """The broker's ``welcome.streams`` entry for a stream both sides hold."""
    return ResumedStream(
        stream=stream.id, received=stream.sent, delivered=stream.delivered, head=stream.head_seen
    )


def refusal(stream: Stream, held: HeldStream, resumed: ResumedStream) -> str | None:
    """Why the two sides' offsets of one stream cannot both be true, or None."""
    where = f"resume of stream {stream.id}"
    if not stream.credited <= resumed.delivered <= resumed.received <= stream.sent:
        return (
            f"{where}: delivered {resumed.delivered} and received {resumed.received} outside "
            f"[{stream.credited}, {stream.sent}]"
        )
    if resumed.head and not (stream.head_seen and held.body_done):
        return f"{where}: the broker has a head that was never sent"
    if resumed.received and not resumed.head:
        return f"{where}: response bytes without a head"
    if held.body > stream.body or (held.body_done and not stream.body_done):
        return f"{where}: the connector has more body ({held.body}) than was sent"
    return None


def restore(stream: Stream, held: HeldStream, resumed: ResumedStream) -> None:
    """Set ``stream`` to the state both sides agree on after the resume (same on both)."""
    skip = resumed.delivered - stream.kept_from if stream.head_seen else 0
    if stream.head_seen:  # keeps response bytes: [delivered, received) stay unacknowledged
        stream.kept = stream.kept[skip : resumed.received - stream.kept_from]
        stream.kept_from = resumed.delivered
    else:  # keeps the request body: the peer has [0, held.body)
        stream.kept = stream.kept[: held.body]
    if not held.body_done:
        stream.state = StreamState.SENDING_BODY
    else:
        stream.state = StreamState.STREAMING if resumed.head else StreamState.AWAITING_HEAD
    stream.body, stream.body_done = held.body, held.body_done
    stream.sent = resumed.received
    stream.credited = stream.delivered = resumed.delivered
    stream.head_seen = resumed.head
    stream.cancelled = False
    stream.end = None


def replay(stream: Stream, before: bytes, resumed: ResumedStream, max_chunk: int) -> list[Frame]:
    """The connector's frames to send again: ``head`` if the broker lacks it, the response
    from ``resumed.received`` on (``before`` is what it kept from that offset), and ``end``."""
    frames: list[Frame] = []
    if stream.head is not None and not resumed.head:
        frames.append(stream.head)
    step = max(max_chunk, 1)
    frames += [
        Data(stream=stream.id, chunk=before[i : i + step]) for i in range(0, len(before), step)
    ]
    if stream.end is not None:
        frames.append(stream.end)
    return frames


def replay_body(stream: Stream, before: bytes, had_last: bool, max_chunk: int) -> list[Frame]:
    """The broker's ``body`` frames to send again from the connector's body offset."""
    step = max(min(BODY_CHUNK_BYTES, max_chunk), 1)
    pieces = [before[i : i + step] for i in range(0, len(before), step)]
    if had_last and not pieces:
        pieces = [b""]
    last = len(pieces) - 1
    return [
        Body(stream=stream.id, chunk=piece, last=had_last and i == last)
        for i, piece in enumerate(pieces)
    ]
