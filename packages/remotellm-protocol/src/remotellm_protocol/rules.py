"""Who may send which frame, and when: one table for both roles and both directions.

This file does not know which role we play. Each frame type has one ``Rule``: the role that
sends it, when in the handshake it may come, and, for a frame about a stream, the stream event
it is (the stream's own (state, event) table is ``streams.TRANSITIONS``). A session checks a
frame it sends against the same rule as a frame it receives; only the error differs
(``LocalProtocolError`` for our own mistake, ``RemoteProtocolError`` for the peer's), so
whatever one side's ``send`` accepts, the other side's ``receive`` accepts too.

Two things one side can know and the other cannot are written here once, as the exceptions
they are:

- ``crosses_end``: a frame the broker sent before it saw the connector's ``end`` arrives for a
  stream the receiver has already ended. The receiver drops it; a sender never sends it.
- an ``open`` may cross the *receiver's* ``goaway``: only its sender, who has seen that
  ``goaway``, can refuse it. No one may send ``open`` after their own ``goaway``.
"""

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal

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
    Hello,
    Models,
    Open,
    Welcome,
)
from remotellm_protocol.limits import MIN_MAX_FRAME_BYTES
from remotellm_protocol.streams import Stream, StreamEvent

__all__ = ["RESPONSE_STATUSES", "RULES", "Role", "Rule"]

#: Longest connector name (``hello.name``), in code points: it shows up in logs, metrics,
#: the portal and the connector's own config (the same rule everywhere).
MAX_NAME_LENGTH = 64

#: HTTP statuses a ``head`` may carry: final statuses whose response has a body. 1xx are
#: interim (101 would switch the client's connection to another protocol) and 204, 205 and
#: 304 never carry content (RFC 9110 §15), so a body relayed after one of them would reach
#: the client as the start of a second, forged response on the same connection.
RESPONSE_STATUSES = frozenset(range(200, 600)) - {204, 205, 304}


class Role(Enum):
    CONNECTOR = "connector"
    BROKER = "broker"

    @property
    def peer(self) -> "Role":
        return Role.BROKER if self is Role.CONNECTOR else Role.CONNECTOR


#: When a frame may come during the handshake: never, as the very first frame of its sender,
#: or once ``hello`` has gone (``models`` and ``welcome``).
Handshake = Literal["never", "first", "after-hello"]

#: A check of a frame against its stream: the reason it is illegal, or None.
StreamCheck = Callable[[Stream, Frame], str | None]


@dataclass(frozen=True, slots=True)
class Rule:
    #: The role that sends this frame; None: either.
    sender: Role | None
    handshake: Handshake = "never"
    #: Legal once the session is open (``hello`` and ``welcome`` come once, in the handshake).
    when_open: bool = True
    #: For a frame about a stream: the stream event it is.
    event: Callable[[Frame], StreamEvent] | None = None
    #: More conditions on the stream, checked before anything changes.
    check: StreamCheck | None = None
    #: May arrive for a stream the receiver has ended (see the module docstring).
    crosses_end: bool = False


def _body_event(frame: Frame) -> StreamEvent:
    assert isinstance(frame, Body)
    return StreamEvent.BODY_LAST if frame.last else StreamEvent.BODY


def _end_event(frame: Frame) -> StreamEvent:
    assert isinstance(frame, End)
    return StreamEvent.END_OK if frame.error is None else StreamEvent.END_ERROR


def _event(event: StreamEvent) -> Callable[[Frame], StreamEvent]:
    return lambda _frame: event


def check_body(stream: Stream, frame: Frame) -> str | None:
    return f"body on cancelled stream {stream.id}" if stream.cancelled else None


def check_head(stream: Stream, frame: Frame) -> str | None:
    assert isinstance(frame, Head)
    if frame.status in RESPONSE_STATUSES:
        return None
    return (
        f"head on stream {stream.id} has status {frame.status} (a final status "
        "that carries a body is required: 200-599 but 204, 205, 304)"
    )


def check_data(stream: Stream, frame: Frame) -> str | None:
    assert isinstance(frame, Data)
    if len(frame.chunk) <= stream.available:
        return None
    return (
        f"data of {len(frame.chunk)} bytes on stream {stream.id} exceeds the "
        f"{stream.available} bytes of credit left"
    )


def check_credit(stream: Stream, frame: Frame) -> str | None:
    """Credit is cumulative: it never moves backwards, nor past the bytes sent."""
    assert isinstance(frame, Credit)
    if stream.credited <= frame.delivered <= stream.sent:
        return None
    return (
        f"credit {frame.delivered} on stream {stream.id} outside [{stream.credited}, {stream.sent}]"
    )


_C, _B = Role.CONNECTOR, Role.BROKER
_E = StreamEvent

RULES: Final[dict[type[Frame], Rule]] = {
    Hello: Rule(_C, handshake="first", when_open=False),
    Models: Rule(_C, handshake="after-hello"),
    Welcome: Rule(_B, handshake="after-hello", when_open=False),
    Open: Rule(_B),
    Body: Rule(_B, event=_body_event, check=check_body, crosses_end=True),
    Head: Rule(_C, event=_event(_E.HEAD), check=check_head),
    Data: Rule(_C, event=_event(_E.DATA), check=check_data),
    End: Rule(_C, event=_end_event),
    Credit: Rule(_B, event=_event(_E.CREDIT), check=check_credit, crosses_end=True),
    Cancel: Rule(_B, event=_event(_E.CANCEL), crosses_end=True),
    GoAway: Rule(None),
    Ended: Rule(_B),
}


def check_hello(frame: Hello) -> str | None:
    if frame.max_streams < 1:
        return "hello.max_streams must be at least 1"
    if not 0 < len(frame.name) <= MAX_NAME_LENGTH or not is_printable_name(frame.name):
        return (
            f"hello.name must be 1 to {MAX_NAME_LENGTH} characters, none of them a control, "
            "format or separator character (spaces included)"
        )
    return None


def is_printable_name(name: str) -> bool:
    """No character of Unicode general category C (control, format, surrogate, private use,
    unassigned) or Z (space, line and paragraph separators): what a log line, a metric label
    and a YAML scalar all show as written."""
    return all(unicodedata.category(c)[0] not in "CZ" for c in name)


def check_welcome(frame: Welcome) -> str | None:
    if frame.max_frame_bytes < MIN_MAX_FRAME_BYTES or frame.initial_window < 1:
        return (
            f"welcome announces unusable limits (max_frame_bytes={frame.max_frame_bytes}, "
            f"initial_window={frame.initial_window})"
        )
    return None


def handshake_refusal(tag: str, sender: Role, *, hello_seen: bool, sending: bool) -> str:
    """Why ``tag`` may not come now during the handshake, in the words of the side that
    refuses it (the sender about its own frame, or the receiver about the peer's)."""
    if sender is Role.CONNECTOR:
        if not hello_seen:
            return f"{tag} before hello" if sending else f"expected hello, got {tag}"
        if tag == "hello":
            return "hello sent twice" if sending else "hello before welcome"
        return f"{tag} before welcome (not allowed in session state HANDSHAKE)"
    if hello_seen and not sending:
        return f"expected welcome, got {tag}"
    return f"{tag} before hello/welcome" + ("" if sending else " (before hello was sent)")


def tag(frame: Frame) -> str:
    return str(type(frame).__struct_config__.tag)
