"""Wire codes: the integers that travel in frames and WebSocket close frames.

They are kept apart from the exceptions that carry them (``errors.py``) because they are part
of the wire format and never change meaning::

    ErrorCode    why a stream ended badly      (``End.error.code``)
    CancelReason why the broker cancels        (``Cancel.reason``)
    CloseCode    why a connection closes       (WebSocket close code)

A peer may receive a code newer than its own release; ``ErrorCode.parse`` and
``CancelReason.parse`` map any unknown value to ``UNKNOWN`` instead of failing, so adding a code
is a compatible change.
"""

from enum import IntEnum
from typing import Self

__all__ = ["CancelReason", "CloseCode", "ErrorCode"]


class _TolerantIntEnum(IntEnum):
    @classmethod
    def parse(cls, value: int) -> Self:
        """The member for ``value``, or ``UNKNOWN`` for a code this release does not know."""
        try:
            return cls(value)
        except ValueError:
            return cls["UNKNOWN"]


class ErrorCode(_TolerantIntEnum):
    """Why a stream ended with an error. The broker maps each to an HTTP status."""

    UNKNOWN = 0
    #: The local LLM server refused the connection or could not be reached (HTTP 502).
    UPSTREAM_UNREACHABLE = 1
    #: The local LLM server did not answer in time (HTTP 504).
    UPSTREAM_TIMEOUT = 2
    #: The local LLM server answered with a status the connector could not relay (HTTP 502).
    UPSTREAM_STATUS = 3
    #: The upstream response broke off after it had started (SSE error event).
    UPSTREAM_INTERRUPTED = 4
    #: The stream was cancelled (by a ``cancel`` frame or a shutdown).
    CANCELLED = 5
    #: The owner's policy does not let this user use this connector (HTTP 403).
    POLICY_DENIED = 6
    #: The owner's per-user rate limit was hit (HTTP 429, ``retry_after`` set).
    RATE_LIMITED = 7
    #: The connector is at its stream limit or shutting down; safe to retry elsewhere (503).
    OVERLOADED = 8
    #: The request is not one a connector forwards (path, method) (HTTP 400).
    BAD_REQUEST = 9
    #: A bug or an unexpected condition inside the connector (HTTP 502).
    INTERNAL = 10
    #: The connector is going away and did not start this stream; retry elsewhere (503).
    GOING_AWAY = 11


class CancelReason(_TolerantIntEnum):
    """Why the broker cancelled a stream."""

    UNKNOWN = 0
    CLIENT_GONE = 1
    DEADLINE = 2
    SHUTDOWN = 3
    USER_BLOCKED = 4


class CloseCode(IntEnum):
    """WebSocket close codes used on the relay (RFC 6455 section 7.4 plus our 4xxx range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    #: The connector did not complete the handshake in time.
    HANDSHAKE_TIMEOUT = 4000
    #: A newer connection with the same connector name (and token) replaced this one.
    REPLACED = 4001
    #: The connector name belongs to another connector token (or this token is bound to
    #: another name); the close reason says which.
    NAME_TAKEN = 4002
    #: The connector token was revoked.
    TOKEN_REVOKED = 4003
    #: The broker cannot resume what ``hello.resume_token`` names: the token is wrong,
    #: already used, expired, or from before a broker restart. Reconnect without it.
    RESUME_REFUSED = 4004
