"""Reading an API request body within the broker's bounds: size, time, bytes in flight.

A body costs the broker what it holds, so every byte is counted before it is kept:

- ``max_body_bytes`` per request: a larger body gets 413, with or without ``Content-Length``
  (counted after ``Content-Encoding`` is undone, so a small gzip cannot unpack to gigabytes);
- ``max_body_bytes_in_flight`` for the whole broker (``BodyBudget``): a body that does not
  fit gets 503 with ``Retry-After`` instead of growing the process;
- ``body_timeout_s`` from the first body read to the last byte: a client that sends half a
  body and stalls (or trickles it) gets 408, and the route closes its connection (``CLOSES``).

The bytes are checked as UTF-8 piece by piece while they arrive, so no copy of the whole body
as text is ever made and no single step holds the event loop for long. The pieces are joined
once, into the one ``bytes`` that is validated and forwarded unchanged.

A ``HeldBody`` owns the body and its reservation; ``release`` drops both. The relay releases
it as soon as a response byte reached the client (no retry can need it any more), the
request's end at the latest.
"""

from __future__ import annotations

import asyncio
import codecs

from aiohttp import web

from remotellm_broker.openai_errors import OpenAIError, retry_after_header

__all__ = ["CLOSES", "BodyBudget", "HeldBody", "answer_and_close", "read_body"]

#: Statuses after which the connection is closed at once (``answer_and_close``): the client
#: stopped sending, so aiohttp's lingering read of the rest would hold the socket 10 s more.
CLOSES = frozenset({408})


class BodyBudget:
    """The request-body bytes the broker holds at once, across all requests: pure."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def try_reserve(self, nbytes: int) -> bool:
        if self.used + nbytes > self.limit:
            return False
        self.used += nbytes
        return True

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        assert self.used >= 0, "released more request-body bytes than were reserved"


class HeldBody:
    """A request body and its share of the ``BodyBudget``, until ``release``."""

    __slots__ = ("_budget", "_reserved", "data")

    def __init__(self, data: bytes, budget: BodyBudget, reserved: int) -> None:
        self.data = data
        self._budget = budget
        self._reserved = reserved

    def release(self) -> None:
        """Forget the bytes and return their reservation (idempotent)."""
        self.data = b""
        if self._reserved:
            self._budget.release(self._reserved)
            self._reserved = 0


async def read_body(
    request: web.Request, budget: BodyBudget, *, max_bytes: int, timeout_s: float
) -> HeldBody:
    """The whole body of ``request``, counted against ``budget``; ``OpenAIError`` if it is
    too large (413), the budget is full (503), it is too slow (408), or unreadable (400)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise _too_large()
    reserved = 0
    if declared and not budget.try_reserve(declared):
        raise _budget_full()
    reserved = declared or 0
    pieces: list[bytes] = []
    size = 0
    utf8 = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large()
                if size > reserved:  # chunked (or a short Content-Length): grow as it comes
                    if not budget.try_reserve(size - reserved):
                        raise _budget_full()
                    reserved = size
                utf8.decode(chunk)  # the text is dropped at once: only the check is wanted
                pieces.append(chunk)
        utf8.decode(b"", final=True)
    except UnicodeDecodeError:
        budget.release(reserved)
        raise _invalid("The request body is not valid UTF-8.") from None
    except TimeoutError:
        budget.release(reserved)
        raise OpenAIError(
            408,
            f"The request body did not arrive within {timeout_s:g} seconds.",
            code="request_timeout",
            type_="invalid_request_error",
        ) from None
    except web.RequestPayloadError:
        budget.release(reserved)
        raise _invalid("The request body could not be read (bad encoding or framing).") from None
    except BaseException:
        budget.release(reserved)
        raise
    if size < reserved:  # the client sent less than it declared: give the rest back
        budget.release(reserved - size)
        reserved = size
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    pieces.clear()
    return HeldBody(data, budget, reserved)


async def answer_and_close(request: web.Request, resp: web.StreamResponse) -> None:
    """Send ``resp`` now and close the connection once it is flushed, instead of letting
    aiohttp linger reading the rest of a body that is not coming."""
    resp.force_close()  # says ``Connection: close``
    await resp.prepare(request)
    await resp.write_eof()
    if request.transport is not None:
        request.transport.close()  # asyncio flushes the answer first


def _too_large() -> OpenAIError:
    return OpenAIError(413, "The request body is too large.", code="request_too_large")


def _budget_full() -> OpenAIError:
    return OpenAIError(
        503,
        "The server is receiving too many large requests at once; try again shortly.",
        code="server_busy",
        headers=retry_after_header(1.0),
    )


def _invalid(message: str) -> OpenAIError:
    return OpenAIError(400, message, code="invalid_request")
