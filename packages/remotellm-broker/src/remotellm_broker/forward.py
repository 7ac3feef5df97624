"""Relaying one validated API request to a connector and its response back to the client.

The path of a request: take a slot on a connector (waiting in the fair queue if all are
busy), send ``open`` (and ``body`` frames), then copy each ``data`` chunk straight to the
client the moment it arrives and grant credit once it is written.

For a streaming request the response starts the moment the model server answers (the
connector's ``head``), or at the latest with the first SSE comment ``: keep-alive``, due
``keepalive_interval_s`` after the request arrived and repeated until the first byte, so
clients and proxies with idle timeouts survive a long prefill. Mid-stream the same timer
checks for progress: after a period without a byte a ``: keep-alive`` goes out too (only
between two events, never inside one), and a model server silent for ``stall_timeout_s``
ends the stream with an SSE error event and a ``cancel`` that aborts its request. Waiting
for ``head`` keeps the model server's own refusals intact: a prompt over the context length
stays an HTTP 400 (which clients such as Cline act on) instead of becoming a 200 with an
error inside.

Once a response has started, a failure cannot change the status any more: a stream gets an
SSE ``error`` event and ends without ``[DONE]``; a plain response has its connection closed
mid-body, so it cannot pass for complete.

Retries: when the chosen connector vanishes before the first body byte reached the client
(during the prefill, say), or answers ``OVERLOADED``/``GOING_AWAY``, the request goes to
another connector (up to ``MAX_ATTEMPTS``), never twice to the same one. When the connector
went away (lost, draining) and no other serves the model, the request waits the attach wait
for one to return (a restarting connector usually does within seconds) before its 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

import msgspec
from aiohttp import web

from remotellm_broker.acquire import acquire_slot
from remotellm_broker.announce import checked_usage
from remotellm_broker.channel import TICK, Broken, Channel, Cut, Item, Lost, Tick
from remotellm_broker.exchange import Exchange
from remotellm_broker.fastpath import direct_writer
from remotellm_broker.framing import client_headers, is_response_status
from remotellm_broker.intake import HeldBody
from remotellm_broker.link import ConnectorLink, LinkGone
from remotellm_broker.openai_errors import (
    RETRYABLE,
    OpenAIError,
    from_cancel,
    from_stream_error,
    retry_after_header,
)
from remotellm_broker.state import BrokerState
from remotellm_broker.surfaces import OPENAI, Surface
from remotellm_protocol import (
    BODY_CHUNK_BYTES,
    CancelReason,
    Data,
    End,
    ErrorCode,
    Head,
    Principal,
)

__all__ = ["MAX_ATTEMPTS", "relay_request"]

MAX_ATTEMPTS: Final = 3
KEEPALIVE: Final = b": keep-alive\n\n"
#: How much of an upstream error body is kept to build the client's error message.
_ERROR_BODY_LIMIT = 64 * 1024
#: Request headers the model server may need: the Anthropic API's version and beta flags
#: change what a Messages request means, so they travel with it.
_FORWARDED_HEADERS = (
    "Content-Type",
    "Accept",
    "User-Agent",
    "anthropic-version",
    "anthropic-beta",
)

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class _Retry(Exception):
    """This attempt did not start the response; another connector may take it.

    ``gone``: the connector went away (lost, draining), so a replacement may attach soon.
    """

    def __init__(self, error: OpenAIError, *, gone: bool = True) -> None:
        super().__init__(error.message)
        self.error = error
        self.gone = gone


async def relay_request(
    request: web.Request,
    state: BrokerState,
    ex: Exchange,
    principal: Principal,
    body: HeldBody,
    *,
    surface: Surface = OPENAI,
    endpoint: str | None = None,
    only: str | None = None,
    on_first_chunk: Callable[[bytes], None] | None = None,
) -> web.StreamResponse:
    """Relay ``request`` (its validated ``body``) and return the finished response.

    ``endpoint``: the capability a connector must announce to take it (None: any connector
    serving the model); ``surface``: the API whose error event ends a failed stream;
    ``only``: the name of the one connector that may take it (it holds a stored response);
    ``on_first_chunk``: called with the first body bytes of a successful answer.
    ``body`` is released once a response byte reached the client: no retry can use it then.
    """
    relay = _Relay(request, state, ex, principal, body)
    relay.surface, relay.endpoint = surface, endpoint
    relay.only, relay.on_first_chunk = only, on_first_chunk
    return await relay.run()


class _Relay:
    def __init__(
        self,
        request: web.Request,
        state: BrokerState,
        ex: Exchange,
        principal: Principal,
        body: HeldBody,
    ) -> None:
        self.request = request
        self.state = state
        self.ex = ex
        self.principal = principal
        self.body = body
        self.resp: web.StreamResponse | None = None
        #: ``resp`` when it is the SSE response this broker started (keep-alives go there).
        self.sse: web.StreamResponse | None = None
        self.channel = ex.channel = Channel()
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + state.settings.request_timeout_s
        self.keepalive: asyncio.TimerHandle | None = None
        self.head: Head | None = None
        self.error_body: bytearray | None = None
        #: The last bytes written to the client: a keep-alive only goes between events.
        self.tail = b""
        #: Response bytes seen at the last keep-alive tick, and when they last grew.
        self.seen_nbytes = 0
        self.progress_at = 0.0
        self.surface = OPENAI
        self.endpoint: str | None = None
        self.only: str | None = None
        self.on_first_chunk: Callable[[bytes], None] | None = None
        headers = request.headers
        self.forward_headers = [
            (name.lower(), headers[name][:1024]) for name in _FORWARDED_HEADERS if name in headers
        ]
        self.forward_headers.append(("x-request-id", ex.request_id))

    async def run(self) -> web.StreamResponse:
        ex, router = self.ex, self.state.router
        assert ex.model is not None
        deadline_timer = self.loop.call_at(self.deadline, ex.cut, CancelReason.DEADLINE)
        if ex.stream:
            self._arm_keepalive()
        tried: list[ConnectorLink] = []
        others = [c for c in router.registry.serving(ex.model) if c.name != self.only]
        excluded = others if self.only is not None else []
        error = OpenAIError(503, "No connector is available for this model.", code="no_capacity")
        gone = False
        try:
            while len(tried) < MAX_ATTEMPTS:
                avoid = [*excluded, *tried]
                if tried and not gone and not router.has_candidate(ex.model, avoid, self.endpoint):
                    break
                remaining = max(self.deadline - self.loop.time(), 0.0)
                link = await acquire_slot(self.state, ex, avoid, remaining, self.endpoint)
                try:
                    return await self._attempt(link)
                except _Retry as retry:
                    tried.append(link)
                    error, gone = retry.error, retry.gone
            if "Retry-After" not in error.headers:
                error.headers.update(retry_after_header(None))
            return await self._fail(error)
        except OpenAIError as err:
            return await self._fail(err)
        finally:
            deadline_timer.cancel()
            if self.keepalive is not None:
                self.keepalive.cancel()

    # -- one attempt on one connector -------------------------------------------------------

    async def _attempt(self, link: ConnectorLink) -> web.StreamResponse:
        ex = self.ex
        ex.attempts += 1
        ex.connector = link.name
        remaining_ms = max(int((self.deadline - self.loop.time()) * 1000), 1)
        try:
            body = self.body.data
            stream_id = link.open(
                self.channel,
                correlation_id=ex.request_id,
                method=self.request.method,
                path=self.request.path,
                principal=self.principal,
                headers=self.forward_headers,
                deadline_ms=remaining_ms,
                body=body,
            )
        except LinkGone:
            self.state.router.release(link)
            raise _Retry(OpenAIError(503, "The connector went away.", code="no_capacity")) from None
        try:
            if len(body) > BODY_CHUNK_BYTES:
                await link.send_body(stream_id, body)
            del body  # the only other holder is ``self.body``, released at the first byte
            self.head = None
            self.error_body = None
            return await self._pump(link, stream_id)
        except asyncio.CancelledError:
            link.cancel(stream_id, CancelReason.CLIENT_GONE)
            ex.status = 499
            raise
        except ConnectionError:  # a write found the client gone before aiohttp noticed
            link.cancel(stream_id, CancelReason.CLIENT_GONE)
            ex.status = 499
            assert self.resp is not None
            return self.resp
        finally:
            self.channel.sink = None
            link.detach(stream_id)

    async def _pump(self, link: ConnectorLink, stream_id: int) -> web.StreamResponse:
        """Copy the stream's events to the client until it ends."""
        ex, channel = self.ex, self.channel
        while True:
            item = await channel.get()
            if type(item) is Data:  # the hot path: one write, maybe one credit frame
                chunk = channel.more_data(item.chunk)
                if self.error_body is None:
                    if not ex.nbytes and self.on_first_chunk is not None and self._ok():
                        self.on_first_chunk(chunk)
                    resp = self.resp
                    if resp is None:  # the first body byte of a plain response
                        resp = await self._start_plain()
                    if ex.ttft_s is None:
                        ex.ttft_s = time.perf_counter() - ex.started
                        self.body.release()
                    await resp.write(chunk)
                    ex.nbytes += len(chunk)
                    self.tail = chunk[-4:]
                    await self.request.writer.drain()  # waits only while the client lags
                    if channel.sink is None:
                        channel.sink = self._sink(resp, link, stream_id)
                else:
                    self.error_body += chunk[: _ERROR_BODY_LIMIT - len(self.error_body)]
                link.acknowledge(stream_id, len(chunk))
            elif type(item) is End:
                return await self._end(item)
            else:
                await self._event(link, stream_id, item)

    def _sink(
        self, resp: web.StreamResponse, link: ConnectorLink, stream_id: int
    ) -> Callable[[bytes], bool] | None:
        """The hot path once the response flows: a function the link calls with the chunks
        of one batch, writing them to the client's socket in one call (``fastpath``, whose
        preconditions hold here: ``resp`` had its first chunk written by this task) and
        granting credit, without waking this request's task. None when the response is not
        a plain byte stream we can frame."""
        write = direct_writer(self.request, resp)
        if write is None:
            return None
        ex = self.ex
        acknowledge = link.acknowledge
        relay = self

        def sink(chunk: bytes) -> bool:
            if not write(chunk):
                return False  # the task writes it, waiting for the client to catch up
            size = len(chunk)
            ex.nbytes += size
            relay.tail = chunk[-4:]
            acknowledge(stream_id, size)
            return True

        return sink

    async def _event(self, link: ConnectorLink, stream_id: int, item: Item) -> None:
        """Everything but ``data`` and ``end``: head, connection lost, cut, keep-alive tick."""
        ex = self.ex
        if isinstance(item, Head):
            await self._head(link, stream_id, item)
        elif isinstance(item, Broken):
            raise _bad_response(item.problem)
        elif isinstance(item, Lost):
            if self._untouched():
                raise _Retry(OpenAIError(503, "The connector disconnected.", code="no_capacity"))
            raise OpenAIError(
                502,
                "The connection to the model broke off mid-response.",
                code="upstream_interrupted",
            )
        elif isinstance(item, Cut):
            link.cancel(stream_id, item.reason)
            raise from_cancel(item.reason)
        elif isinstance(item, Tick) and self.error_body is None:
            if ex.nbytes:
                await self._midstream_tick(link, stream_id)
                return
            if self.resp is None and self.head is None:  # no answer yet: start the stream
                await self._start_sse()
            if self.sse is not None:  # never into a plain (JSON) response
                await self.sse.write(KEEPALIVE)
                self._arm_keepalive()

    async def _head(self, link: ConnectorLink, stream_id: int, head: Head) -> None:
        if not is_response_status(head.status):  # 1xx, 204, 304: a forged second response
            link.cancel(stream_id, CancelReason.UNKNOWN)
            raise _bad_response(f"status {head.status}")
        # A plain response (or a stream the model server refused up front, which keeps its
        # status) starts with its first body byte, so a connector lost before that can still
        # be replaced by another one.
        self.head = head
        if self.sse is None:
            if self.ex.stream and head.status < 400:
                await self._start_sse()
        elif head.status >= 400:  # the stream already started (keep-alives went out)
            self.error_body = bytearray()  # becomes an SSE error event at the end

    async def _midstream_tick(self, link: ConnectorLink, stream_id: int) -> None:
        """A keep-alive period passed after the first byte: note progress, keep a silent
        stream alive between events, end one whose model server stalled."""
        now = self.loop.time()
        if self.ex.nbytes != self.seen_nbytes:
            self.seen_nbytes, self.progress_at = self.ex.nbytes, now
        elif now - self.progress_at >= self.state.settings.stall_timeout_s:
            link.cancel(stream_id, CancelReason.DEADLINE)  # the connector aborts the request
            raise OpenAIError(
                504,
                "The model server stopped sending mid-answer "
                f"(silent for {self.state.settings.stall_timeout_s:g} s).",
                code="upstream_stalled",
            )
        elif self.sse is not None and self.tail.endswith((b"\n\n", b"\r\n\r\n")):
            await self.sse.write(KEEPALIVE)
        self._arm_keepalive()

    def _ok(self) -> bool:
        return self.head is not None and 200 <= self.head.status < 300

    def _untouched(self) -> bool:
        """Nothing of this attempt reached the client: another connector may take over."""
        return not self.ex.nbytes and (self.resp is None or self.resp is self.sse)

    async def _end(self, end: End) -> web.StreamResponse:
        ex, head = self.ex, self.head
        ex.usage = checked_usage(end.usage, connector=ex.connector, request_id=ex.request_id)
        if end.error is not None:
            err = from_stream_error(end.error)
            code = ErrorCode.parse(end.error.code)
            if self._untouched() and code in RETRYABLE:
                raise _Retry(err, gone=code is ErrorCode.GOING_AWAY)
            raise err
        if head is not None and self.error_body is not None:
            raise _upstream_error(head.status, bytes(self.error_body))
        ex.status = head.status if head is not None else 200
        resp = self.resp
        if resp is None:  # a plain response with an empty body
            resp = await self._start_plain()
        await resp.write_eof()
        return resp

    # -- responses --------------------------------------------------------------------------

    def _arm_keepalive(self) -> None:
        interval = self.state.settings.keepalive_interval_s
        self.keepalive = self.loop.call_later(interval, self.channel.push, TICK)

    async def _start_sse(self) -> None:
        resp = web.StreamResponse(status=200, headers={**self.ex.headers, **_SSE_HEADERS})
        self.resp = self.sse = resp
        await resp.prepare(self.request)

    async def _start_plain(self) -> web.StreamResponse:
        head = self.head
        assert head is not None  # the protocol puts head before data and a clean end
        # The broker frames the response: its status line, its own headers, and only the
        # allowlisted headers of the connector's (``framing``); aiohttp does the length or
        # the chunking.
        headers = {"Content-Type": "application/json"}
        headers.update(client_headers(head.status, head.headers))
        headers.update(self.ex.headers)
        resp = self.resp = web.StreamResponse(status=head.status, headers=headers)
        await resp.prepare(self.request)
        return resp

    async def _fail(self, err: OpenAIError) -> web.StreamResponse:
        """End the request with ``err`` in whatever form the response still allows."""
        self.ex.status = err.status
        resp = self.resp
        if resp is None:
            raise err
        try:
            if resp is self.sse:
                await resp.write(self.surface.sse_event(err))
                await resp.write_eof()
            else:
                resp.force_close()
                transport = self.request.transport
                if transport is not None:
                    transport.close()  # a body cut short: the client must not see it complete
        except ConnectionError:
            self.ex.status = 499
        return resp


def _bad_response(problem: str) -> OpenAIError:
    """The connector broke the relay protocol on this stream: never retried, never relayed."""
    return OpenAIError(
        502, f"The connector sent an invalid response: {problem}.", code="bad_connector_response"
    )


def _upstream_error(status: int, body: bytes) -> OpenAIError:
    """The model server's own error (non-2xx head on a stream), in OpenAI's shape."""
    message = f"The model server answered HTTP {status}."
    code: str | None = "upstream_error"
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"][:1000]
        code = error["code"] if isinstance(error.get("code"), str) else code
    elif isinstance(error, str):
        message = error[:1000]
    elif isinstance(data, dict) and isinstance(data.get("detail"), str):
        message = data["detail"][:1000]
    status = status if 400 <= status <= 599 else 502
    return OpenAIError(status, message, code=code)
