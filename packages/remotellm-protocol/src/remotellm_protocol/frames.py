"""The frames of wire version 1: one tagged union of frozen msgspec Structs.

Every WebSocket message carries exactly one frame, a msgpack map whose ``"t"`` key is the tag.
Tags and field names are the wire format and never change. Schema evolution follows msgspec's
rules: a new field always gets a default, no field is ever retyped or removed, and unknown
fields are ignored by older decoders.

Direction: C = connector, B = broker.

Every class repeats ``frozen=True, kw_only=True``: msgspec applies ``kw_only`` only to the
fields a class defines itself, and type checkers only see what each class says. Keyword-only
construction keeps callers correct when a release adds a field.
"""

from typing import Final

import msgspec

__all__ = [
    "Body",
    "Cancel",
    "Credit",
    "Data",
    "End",
    "Ended",
    "Frame",
    "GoAway",
    "Head",
    "HeldStream",
    "Hello",
    "ModelInfo",
    "Models",
    "Open",
    "Principal",
    "ResumedStream",
    "StreamError",
    "Usage",
    "Welcome",
]

Headers = list[tuple[str, str]]


class _Value(msgspec.Struct, frozen=True, kw_only=True):
    """Plain frozen value embedded in a frame."""


class ModelInfo(_Value, frozen=True, kw_only=True):
    """A model a connector serves, with what the LLM server tells about it."""

    id: str
    owned_by: str | None = None
    context_length: int | None = None
    #: False while the LLM server behind the model does not answer: the model stays known
    #: (clients get 503 with ``Retry-After``, not 404) but no stream is routed to it.
    available: bool = True
    #: The API paths the model's server answers (``/v1/responses``, ``/v1/messages``, ...),
    #: found by the connector's probes; None when the connector does not say (an older one):
    #: the broker then assumes the OpenAI routes of wire version 1 only.
    endpoints: list[str] | None = None


class Principal(_Value, frozen=True, kw_only=True):
    """Who sent a request: the broker's user id and key id. Never the key itself."""

    user_id: str
    key_id: str
    name: str | None = None


class Usage(_Value, frozen=True, kw_only=True):
    """Token counts of a completed request, as the upstream reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class StreamError(_Value, frozen=True, kw_only=True):
    """Why a stream failed: a wire ``ErrorCode`` value and a human-readable message.

    ``code`` is an ``int`` rather than the enum so a newer peer's codes still decode; read it
    with ``ErrorCode.parse(error.code)``.
    """

    code: int
    message: str = ""
    #: Seconds the client should wait before retrying (``RATE_LIMITED``, ``OVERLOADED``).
    retry_after: float | None = None


class HeldStream(_Value, frozen=True, kw_only=True):
    """In a resuming ``hello``: a stream the connector still holds, and how much of its
    request body it has received (``open.body`` included)."""

    stream: int
    body: int = 0
    #: The connector has the whole request body (it saw the last piece).
    body_done: bool = True


class ResumedStream(_Value, frozen=True, kw_only=True):
    """In the ``welcome`` that accepts a resume: a stream that continues, with the broker's
    offsets of its response."""

    stream: int
    #: Response bytes the broker has received: the connector replays from this offset.
    received: int = 0
    #: Response bytes the broker has delivered; counts as a ``credit`` (``<= received``).
    delivered: int = 0
    #: The broker has the stream's ``head`` (else the connector sends it again).
    head: bool = False


class _Frame(msgspec.Struct, frozen=True, kw_only=True, tag_field="t"):
    """Base of every frame; subclasses set an explicit, stable tag."""


class Hello(_Frame, frozen=True, kw_only=True, tag="hello"):
    """C→B, first frame: who the connector is and what it serves."""

    name: str
    version: str
    models: list[ModelInfo] = msgspec.field(default_factory=list)
    max_streams: int = 16
    #: The resume token of the previous connection's ``welcome``: this connection resumes it.
    resume_token: str | None = None
    #: The connector can resume its streams after a reconnect (docs/protocol.md, Resumption).
    resumable: bool = False
    #: With ``resume_token``: every stream the connector still holds.
    streams: list[HeldStream] = msgspec.field(default_factory=list)


class Welcome(_Frame, frozen=True, kw_only=True, tag="welcome"):
    """B→C, first frame: the session and the limits in force."""

    session_id: str
    max_frame_bytes: int
    initial_window: int
    heartbeat_s: float
    #: Present only to a ``resumable`` connector: the token its next ``hello`` presents to
    #: resume this connection's streams, valid for ``resume_window_s`` after the link drops.
    resume_token: str | None = None
    resume_window_s: float = 0.0
    #: Answering a resuming ``hello``: the streams that continue (all others are lost).
    streams: list[ResumedStream] = msgspec.field(default_factory=list)


class Models(_Frame, frozen=True, kw_only=True, tag="models"):
    """C→B: the full current model list (sent again whenever it changes)."""

    models: list[ModelInfo]


class Open(_Frame, frozen=True, kw_only=True, tag="open"):
    """B→C: a new request. ``body`` holds the first piece; ``more_body`` says ``body`` frames
    follow with the rest."""

    stream: int
    correlation_id: str
    method: str
    path: str
    principal: Principal
    headers: Headers = msgspec.field(default_factory=list)
    #: Milliseconds the connector has to finish the request, counted from receipt.
    deadline_ms: int | None = None
    body: bytes = b""
    more_body: bool = False


class Body(_Frame, frozen=True, kw_only=True, tag="body"):
    """B→C: the next piece of a request body; ``last`` marks the final piece."""

    stream: int
    chunk: bytes
    last: bool = False


class Head(_Frame, frozen=True, kw_only=True, tag="head"):
    """C→B: the upstream's HTTP status and response headers."""

    stream: int
    status: int
    headers: Headers = msgspec.field(default_factory=list)


class Data(_Frame, frozen=True, kw_only=True, tag="data"):
    """C→B: the next bytes of the upstream response body, passed through unchanged."""

    stream: int
    chunk: bytes


class End(_Frame, frozen=True, kw_only=True, tag="end"):
    """C→B: the stream is finished, successfully (``error`` is None) or not."""

    stream: int
    usage: Usage | None = None
    error: StreamError | None = None


class Credit(_Frame, frozen=True, kw_only=True, tag="credit"):
    """B→C: cumulative response bytes the broker has delivered to the client on a stream."""

    stream: int
    delivered: int


class Cancel(_Frame, frozen=True, kw_only=True, tag="cancel"):
    """B→C: stop this stream (a ``CancelReason`` value); the connector answers with ``end``."""

    stream: int
    reason: int


class Ended(_Frame, frozen=True, kw_only=True, tag="ended"):
    """B→C, only on a resumable connection: the broker has the stream's ``end``, so the
    connector may forget what it kept to replay it."""

    stream: int


class GoAway(_Frame, frozen=True, kw_only=True, tag="goaway"):
    """Either way: the sender takes no new streams; in-flight streams finish."""

    reason: str = ""


Frame = (
    Hello | Welcome | Models | Open | Body | Head | Data | End | Credit | Cancel | GoAway | Ended
)

#: Every frame type, in tag order of the specification.
FRAME_TYPES: Final = (
    Hello,
    Welcome,
    Models,
    Open,
    Body,
    Head,
    Data,
    End,
    Credit,
    Cancel,
    GoAway,
    Ended,
)
