"""The fast path: relayed chunks written straight to the client's socket.

Once a response flows, the connector's reader hands each batch of ``data`` chunks to the
stream's sink (``channel``), which writes them to the client's transport itself instead of
waking the request handler's task for an ``await resp.write``. That is a measured win on
the hot path, and it relies on how aiohttp writes a ``StreamResponse``; this module is the
one place that does, and ``tests/test_fastpath_contract.py`` fails if an aiohttp release
changes any of it (``pyproject.toml`` bounds aiohttp below the next minor release).

Preconditions (what aiohttp does and what ``direct_writer`` assumes):

1. **The headers are on the wire after the first body write.** A ``StreamResponse``'s
   ``prepare()`` writes the status line and headers at once (aiohttp 3.14); a
   ``web.Response`` buffers them until its first body write, and so would a release that
   extended that to streams. A direct writer is therefore made only after the request
   handler's own first ``await resp.write(chunk)`` of a non-empty chunk (``forward``): in
   either case bytes written to the transport after that land behind the headers.
2. **aiohttp holds no body bytes of its own.** True for an uncompressed response whose
   length aiohttp does not count: a compressed response or one with ``Content-Length`` gets
   no direct writer. After a direct write aiohttp's own counters (``body_length``) are
   short; the broker counts bytes itself (``Exchange.nbytes``).
3. **The framing is HTTP/1.1 chunked or none.** ``prepare()`` sets ``Transfer-Encoding:
   chunked`` on the response's headers when it chunks (HTTP/1.1 without a length); with no
   such header (HTTP/1.0) the body is close-delimited and written as is. Any other transfer
   coding gets no direct writer. A chunk is framed as ``<size hex>\\r\\n<bytes>\\r\\n``
   exactly as aiohttp frames it; an empty chunk would be the terminator, so callers never
   pass one (``Channel.offer`` drops them). ``write_eof()`` still ends the body with
   ``0\\r\\n\\r\\n``.
4. **Flow control is visible.** ``request.protocol.writing_paused`` is True while the
   transport's buffer is above its high-water mark (asyncio's ``pause_writing``), and
   ``request.writer.drain()`` waits for it to clear. A direct writer refuses a chunk while
   the socket is paused or closing; the handler's task then writes it with
   ``resp.write`` and ``drain``, so a slow client holds at most one credit window.
5. **``request.transport`` is the connection's transport** (None once it is gone).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

__all__ = ["direct_writer"]


def direct_writer(
    request: web.BaseRequest, resp: web.StreamResponse
) -> Callable[[bytes], bool] | None:
    """A function writing one non-empty chunk of ``resp``'s body straight to the client's
    socket, framed as aiohttp would, and False when the socket cannot take it now (paused
    or closing). None when the response is not one it can frame (see the preconditions).

    Call it only after ``resp`` was prepared and one body chunk written through it."""
    transport, protocol = request.transport, request.protocol
    encoding = resp.headers.get("Transfer-Encoding", "").lower()
    if transport is None or resp.compression or "Content-Length" in resp.headers:
        return None
    if encoding not in ("", "chunked"):
        return None

    if encoding == "chunked":

        def write(chunk: bytes) -> bool:
            if protocol.writing_paused or transport.is_closing():
                return False
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            return True

    else:

        def write(chunk: bytes) -> bool:
            if protocol.writing_paused or transport.is_closing():
                return False
            transport.write(chunk)
            return True

    return write
