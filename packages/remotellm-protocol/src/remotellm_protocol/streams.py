"""One relayed request: its state machine, written as a transition table, and its credit window.

A stream lives from ``open`` to ``end``::

            open(more_body)            body(last)
    ──────▶ SENDING_BODY ────────────────────────────▶ AWAITING_HEAD ──head──▶ STREAMING
    open        │  ▲ body                                  │                   │  ▲ data
    ────────────┼──┴───────────────────────────────────────▶                   │  │
                │ end(error)                               │ end(error)        └──┘
                ▼                                          ▼                   │ end
              CLOSED ◀─────────────────────────────────────┴───────────────────┘

``cancel`` may come once in any live state and does not change it: the connector still
answers with exactly one ``end``. ``credit`` is legal once the request body is complete.
Any (state, event) pair missing from the table is a protocol error.

Flow control: the connector may have at most ``window`` bytes of ``data`` that the broker has
not yet acknowledged with ``credit`` (``sent - delivered <= window``); ``delivered`` is
cumulative and never moves backwards or past ``sent``.
"""

from enum import Enum, auto
from typing import Final

from remotellm_protocol.frames import End, Head

__all__ = ["Stream", "StreamEvent", "StreamState"]


class StreamState(Enum):
    SENDING_BODY = auto()
    AWAITING_HEAD = auto()
    STREAMING = auto()
    CLOSED = auto()


class StreamEvent(Enum):
    BODY = auto()
    BODY_LAST = auto()
    HEAD = auto()
    DATA = auto()
    END_OK = auto()
    END_ERROR = auto()
    CREDIT = auto()
    CANCEL = auto()


_S = StreamState
_E = StreamEvent

TRANSITIONS: Final[dict[tuple[StreamState, StreamEvent], StreamState]] = {
    (_S.SENDING_BODY, _E.BODY): _S.SENDING_BODY,
    (_S.SENDING_BODY, _E.BODY_LAST): _S.AWAITING_HEAD,
    (_S.SENDING_BODY, _E.END_ERROR): _S.CLOSED,
    (_S.SENDING_BODY, _E.CANCEL): _S.SENDING_BODY,
    (_S.AWAITING_HEAD, _E.HEAD): _S.STREAMING,
    (_S.AWAITING_HEAD, _E.END_ERROR): _S.CLOSED,
    (_S.AWAITING_HEAD, _E.CREDIT): _S.AWAITING_HEAD,
    (_S.AWAITING_HEAD, _E.CANCEL): _S.AWAITING_HEAD,
    (_S.STREAMING, _E.DATA): _S.STREAMING,
    (_S.STREAMING, _E.END_OK): _S.CLOSED,
    (_S.STREAMING, _E.END_ERROR): _S.CLOSED,
    (_S.STREAMING, _E.CREDIT): _S.STREAMING,
    (_S.STREAMING, _E.CANCEL): _S.STREAMING,
}


class Stream:
    """State and credit of one stream, as one side of the connection sees it."""

    __slots__ = (
        "body",
        "body_done",
        "cancelled",
        "credited",
        "delivered",
        "end",
        "head",
        "head_seen",
        "id",
        "kept",
        "kept_from",
        "sent",
        "state",
        "window",
    )

    def __init__(self, stream_id: int, window: int, *, more_body: bool) -> None:
        self.id = stream_id
        self.window = window
        self.state = _S.SENDING_BODY if more_body else _S.AWAITING_HEAD
        self.cancelled = False
        #: Request-body bytes sent in ``open`` and ``body`` frames; all of them came.
        self.body = 0
        self.body_done = not more_body
        #: The stream's ``head`` has gone by.
        self.head_seen = False
        # What a side keeps on a resumable connection to replay after a resume (the
        # ``head`` and ``end`` it sent; the payload bytes from offset ``kept_from`` on that
        # the peer has not acknowledged): see ``resume``.
        self.head: Head | None = None
        self.end: End | None = None
        self.kept = bytearray()
        self.kept_from = 0
        #: Response bytes the connector has sent in ``data`` frames.
        self.sent = 0
        #: Response bytes the broker has delivered to its client (what it counts locally).
        self.delivered = 0
        #: The highest ``delivered`` value announced in a ``credit`` frame.
        self.credited = 0

    def refusal(self, event: StreamEvent) -> str | None:
        """Why ``event`` is illegal now, or None if ``transition`` may apply it."""
        if event is _E.CANCEL and self.cancelled:
            return f"stream {self.id} cancelled twice"
        if (self.state, event) not in TRANSITIONS:
            name = event.name.lower()
            return f"{name} not allowed on stream {self.id} in state {self.state.name}"
        return None

    def transition(self, event: StreamEvent) -> str | None:
        """Apply ``event``; return why it is illegal instead, leaving the state unchanged."""
        problem = self.refusal(event)
        if problem is None:
            self.state = TRANSITIONS[(self.state, event)]
            self.cancelled = self.cancelled or event is _E.CANCEL
        return problem

    @property
    def available(self) -> int:
        """How many more response bytes the connector may send right now."""
        return self.window - (self.sent - self.credited)
