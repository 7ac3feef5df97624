"""Why a stream failed, as exceptions that carry their wire code.

Foreign errors (aiohttp's, the OS's) are converted once, at the boundary where they happen
(``upstream.py``), so the dispatcher deals with this tree only::

    StreamFailure                 base: an ``ErrorCode`` and a message safe to show the client
    ├── RequestRefused            BAD_REQUEST: not a request this connector forwards
    ├── UpstreamUnreachable       UPSTREAM_UNREACHABLE: refused, no route, no LLM found (502)
    ├── UpstreamTimeout           UPSTREAM_TIMEOUT: no answer in time (504)
    └── UpstreamInterrupted       UPSTREAM_INTERRUPTED: the response broke off after it began

Messages never contain request bodies or keys.
"""

from typing import ClassVar

from remotellm_protocol import ErrorCode, StreamError

__all__ = [
    "RequestRefused",
    "StreamFailure",
    "UpstreamInterrupted",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]


class StreamFailure(Exception):
    """A stream cannot be served; ``error()`` is what goes into its ``end`` frame."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def error(self) -> StreamError:
        return StreamError(code=self.code, message=self.message)


class RequestRefused(StreamFailure):
    code = ErrorCode.BAD_REQUEST


class UpstreamUnreachable(StreamFailure):
    code = ErrorCode.UPSTREAM_UNREACHABLE


class UpstreamTimeout(StreamFailure):
    code = ErrorCode.UPSTREAM_TIMEOUT


class UpstreamInterrupted(StreamFailure):
    code = ErrorCode.UPSTREAM_INTERRUPTED
