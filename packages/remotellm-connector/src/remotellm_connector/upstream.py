"""The HTTP client to the local LLM server: one pooled aiohttp session, typed failures.

aiohttp's exceptions are converted here and nowhere else (see ``errors.py``): before the
response head, a refused or broken connection is ``UpstreamUnreachable`` and silence is
``UpstreamTimeout``; after it, anything that stops the body is ``UpstreamInterrupted``. The LLM's
own 4xx/5xx are not failures: they are relayed like any answer.

Bytes are read with ``readany()``: whatever the socket delivered, as soon as it did, with no line
reassembly. When the caller stops reading (no credit), aiohttp's buffer fills, it stops reading
the socket, and TCP pushes back on the LLM server. Leaving ``open()`` early (cancel, error)
closes the connection rather than returning it to the pool, which is how the LLM server learns
the client is gone and stops generating.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Final, Self

import aiohttp
import structlog

from remotellm_connector.errors import (
    UpstreamInterrupted,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from remotellm_connector.forward import HOP_BY_HOP, UpstreamRequest, UsageMode

__all__ = ["Upstream", "UpstreamResponse"]

log = structlog.get_logger("remotellm_connector.upstream")

#: Response headers not relayed: hop-by-hop, framing the broker redoes, and cookies.
DROP_RESPONSE_HEADERS: Final = HOP_BY_HOP | frozenset(
    {
        "content-length",
        "content-encoding",
        "set-cookie",
    }
)
#: Request bodies above this go to aiohttp as a stream (its limit for plain bytes).
_LARGE_BODY: Final = 1024 * 1024
#: Statuses with which servers refuse an unknown ``stream_options`` field.
_REJECTS_OPTION: Final = frozenset({400, 422})


class UpstreamResponse:
    """The LLM's answer: status, relayable headers, and its body chunk by chunk.

    Silence mid-body is watched by one lazy timer per response, not aiohttp's ``sock_read``:
    that one cancels and re-creates a timer on every chunk the socket delivers (two heap
    operations and an object per token). Here a read only notes the loop's clock; the timer
    fires at most once per ``read_timeout`` and re-arms for the last read's deadline. It breaks
    the body off only while the stream is waiting for the LLM (a stream paused for want of
    credit is not the LLM's silence).
    """

    __slots__ = (
        "_clock",
        "_content",
        "_last",
        "_timeout",
        "_timer",
        "_waiting",
        "headers",
        "status",
        "usage_mode",
    )

    def __init__(
        self, resp: aiohttp.ClientResponse, usage_mode: UsageMode, read_timeout: float | None
    ) -> None:
        self.status = resp.status
        self.headers = [
            (name, v)
            for k, v in resp.headers.items()
            if (name := k.lower()) not in DROP_RESPONSE_HEADERS  # str, not multidict's istr
        ]
        #: How to read usage from this body (``SNIFF`` after the stream_options fallback).
        self.usage_mode = usage_mode
        self._content = resp.content
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._last = self._clock()
        self._waiting = False
        self._timeout = read_timeout
        self._timer: asyncio.TimerHandle | None = None
        conn = resp.connection
        if read_timeout and conn is not None and conn.protocol is not None:
            conn.protocol.read_timeout = None  # the head arrived: our lazy timer takes over
            conn.protocol.start_timeout()  # drops aiohttp's pending timer
            self._timer = loop.call_later(read_timeout, self._check)

    def _check(self) -> None:
        assert self._timeout is not None
        due = self._last + self._timeout
        if self._waiting and self._clock() >= due:
            self._timer = None
            self._content.set_exception(
                aiohttp.SocketTimeoutError("Timeout on reading data from socket")
            )
            return
        if not self._waiting:  # paused for credit: look again a full period from now
            due = self._clock() + self._timeout
        self._timer = asyncio.get_running_loop().call_at(due, self._check)

    def close(self) -> None:
        """Stop the silence timer (the response is done with)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def read(self) -> bytes:
        """Every byte the LLM sent so far, as soon as there is any; ``b""`` at the end.

        Chunks already buffered behind the first are joined to it, so a stream that fell
        behind sends one ``data`` frame, not one per upstream write.
        """
        content = self._content
        self._waiting = True
        self._last = self._clock()  # silence counts from here (a wait for credit is not silence)
        try:
            chunk = await content.readany()
            if chunk and (more := content.read_nowait()):
                chunk += more
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamInterrupted(f"the LLM server's response broke off: {_why(exc)}") from exc
        finally:
            self._waiting = False
        return chunk


class Upstream:
    """The pooled client; ``base_url`` may change when discovery finds the server later."""

    def __init__(
        self,
        base_url: str | None,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        pool_size: int = 20,
    ) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._pool_size = pool_size
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        #: False once the server was seen to refuse ``stream_options`` (then never sent).
        self.stream_options_ok = True
        #: Called when a request cannot connect (discovery then re-checks the server at once).
        self.on_unreachable: Callable[[], None] = _nothing

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=0, keepalive_timeout=30
        )
        # trust_env=False: a proxy set for the internet must not capture the local LLM.
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, trust_env=False
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared aiohttp session (discovery uses it too)."""
        if self._session is None:
            raise RuntimeError("Upstream used outside 'async with'")
        return self._session

    def auth_headers(self) -> dict[str, str]:
        """The LLM server's own key, if it was started with one."""
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    @asynccontextmanager
    async def open(self, req: UpstreamRequest) -> AsyncIterator[UpstreamResponse]:
        """Send ``req``; yield the response once its head arrived."""
        resp = await self._send(req)
        mode = req.usage
        if req.original_body is not None and resp.status in _REJECTS_OPTION:
            # Maybe the server does not know stream_options: ask again as the client did.
            resp.close()
            req = req.without_injection()
            resp = await self._send(req)
            mode = req.usage
            if resp.status < 400 and self.stream_options_ok:
                self.stream_options_ok = False
                log.warning("llm_rejects_stream_options", status="usage from stream tail only")
        answer = UpstreamResponse(resp, mode, self._read_timeout)
        try:
            yield answer
        except BaseException:
            resp.close()  # not back to the pool: the LLM must see the disconnect
            raise
        finally:
            answer.close()
        resp.release()

    async def _send(self, req: UpstreamRequest) -> aiohttp.ClientResponse:
        if self.base_url is None:
            raise UpstreamUnreachable("no LLM server found on this machine")
        headers = dict(req.headers)
        if req.method == "POST" and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        headers["Accept-Encoding"] = "identity"
        headers.update(self.auth_headers())
        body: bytes | AsyncIterator[memoryview] | None = req.body or None
        if req.body and len(req.body) > _LARGE_BODY:
            # aiohttp writes big bytes in one go (and warns), and a BytesIO it copies whole;
            # slices of the one body, with its length declared, cost nothing.
            body = _pieces(req.body)
            headers["Content-Length"] = str(len(req.body))
        try:
            return await self.session.request(
                req.method, self.base_url + req.path, data=body, headers=headers
            )
        except aiohttp.ConnectionTimeoutError as exc:
            self.on_unreachable()
            raise UpstreamUnreachable(f"connecting to the LLM server timed out: {exc}") from exc
        except aiohttp.ClientConnectorError as exc:
            self.on_unreachable()
            raise UpstreamUnreachable(f"cannot connect to the LLM server: {_why(exc)}") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout("the LLM server did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable(f"the LLM server failed to answer: {_why(exc)}") from exc


async def _pieces(body: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(body)
    for offset in range(0, len(body), _LARGE_BODY):
        yield view[offset : offset + _LARGE_BODY]


def _nothing() -> None:
    pass


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return exc.os_error.strerror or str(exc.os_error) or type(exc).__name__
    return str(exc) or type(exc).__name__
