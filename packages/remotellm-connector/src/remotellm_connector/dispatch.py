"""Streams: each ``open`` becomes one task, owned by the relay connection's task group.

The receive loop calls ``Dispatcher.handle`` for every frame, synchronously: ``open`` starts a
task, ``body`` feeds it, ``credit`` wakes it, ``cancel`` cancels it. A stream task asks the LLM,
sends ``head``, then every upstream chunk as ``data`` the moment it arrives, then one ``end``.

Flow control: a task never sends more than ``session.available(stream)``. With no credit left it
waits on its own ``asyncio.Event`` and, meanwhile, does not read the LLM's response, so the
socket to the LLM fills and the LLM server slows down: one slow client costs one stream's window
of memory here, never more, and no other stream waits for it.

Cancellation: ``cancel`` from the broker, shutdown and the relay dropping all cancel the task;
leaving ``Upstream.open`` closes the connection to the LLM at once, so generation stops within
milliseconds. Only a task cancelled by its own dispatcher swallows the cancellation, answers with
the right ``end`` (none if the relay is gone) and finishes normally.
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection
from enum import Enum, auto

import structlog

from remotellm_connector.errors import RequestRefused, StreamFailure
from remotellm_connector.forward import plan_in_thread, plan_request
from remotellm_connector.metrics import Metrics
from remotellm_connector.policy import Policy
from remotellm_connector.records import StreamLog
from remotellm_connector.upstream import Upstream
from remotellm_connector.usage import UsageTap
from remotellm_connector.writer import RelayGone
from remotellm_protocol import (
    MAX_REQUEST_BODY_BYTES,
    Body,
    Cancel,
    ConnectorSession,
    Credit,
    Data,
    End,
    ErrorCode,
    Frame,
    Head,
    Open,
    StreamError,
    Usage,
)

__all__ = ["Abort", "Dispatcher", "RelayGone"]

log = structlog.get_logger("remotellm_connector.dispatch")

SendFrame = Callable[[Frame], Awaitable[None]]


class Abort(Enum):
    """Why the dispatcher stops a stream."""

    BROKER_CANCEL = auto()  # answer end(CANCELLED)
    SHUTDOWN = auto()  # forced shutdown: answer end with an error
    RELAY_LOST = auto()  # nobody to answer


class _Stream:
    __slots__ = (
        "abort",
        "admitted",
        "body_ready",
        "born",
        "credit",
        "ended",
        "events",
        "head_sent",
        "id",
        "model",
        "nbytes",
        "open",
        "parts",
        "size",
        "started",
        "task",
        "too_large",
    )

    def __init__(self, frame: Open) -> None:
        self.id = frame.stream
        self.open = frame
        self.parts: list[bytes] = [frame.body]
        self.size = len(frame.body)
        self.too_large = False
        self.body_ready = asyncio.Event()
        if not frame.more_body:
            self.body_ready.set()
        self.credit = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.started = False
        self.abort: Abort | None = None
        self.admitted = False
        self.head_sent = False
        #: ``end`` was handed to the socket: the stream is over for the broker.
        self.ended = False
        self.nbytes = 0
        #: For ``remotellm-connector status``: when it opened, its model, SSE events so far.
        self.born = time.monotonic()
        self.model: str | None = None
        self.events = 0

    def add_body(self, chunk: bytes, last: bool) -> None:
        if not self.too_large:
            self.size += len(chunk)
            if self.size > MAX_REQUEST_BODY_BYTES:
                self.too_large = True
                self.parts.clear()
                self.body_ready.set()  # fail now, not after the rest arrived
            else:
                self.parts.append(chunk)
        if last:
            self.body_ready.set()

    async def body(self) -> bytes:
        await self.body_ready.wait()
        if self.too_large:
            raise RequestRefused(f"request body larger than {MAX_REQUEST_BODY_BYTES} bytes")
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)

    def stop(self, why: Abort) -> None:
        if self.ended and why is not Abort.RELAY_LOST:
            return  # a cancel that crossed our end: nothing left to stop
        if self.abort is None or why is Abort.RELAY_LOST:
            self.abort = why
        if self.started and self.task is not None:
            self.task.cancel()
        # A task that has not run yet sees ``abort`` as its first step.


class Dispatcher:
    """Owns the stream tasks of one relay connection."""

    def __init__(
        self,
        *,
        session: ConnectorSession,
        send: SendFrame,
        upstream: Upstream,
        policy: Policy,
        metrics: Metrics,
        task_group: asyncio.TaskGroup,
        known_models: Callable[[], Collection[str]] = frozenset,
        records: StreamLog | None = None,
    ) -> None:
        self.session = session
        self._send = send
        self.upstream = upstream
        self.policy = policy
        self.metrics = metrics
        self._tg = task_group
        self._known_models = known_models
        self.records = records
        self.streams: dict[int, _Stream] = {}
        #: Set after this side's ``goaway``: every new ``open`` is answered ``GOING_AWAY``.
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- frames from the broker (called by the receive loop) --------------------------------

    def handle(self, frame: Frame) -> None:
        """Act on one frame the session accepted."""
        if type(frame) is Credit:
            stream = self.streams.get(frame.stream)
            if stream is not None:
                stream.credit.set()
        elif type(frame) is Open:
            self._open(frame)
        elif type(frame) is Body:
            stream = self.streams.get(frame.stream)
            if stream is not None:
                stream.add_body(frame.chunk, frame.last)
        elif type(frame) is Cancel:
            stream = self.streams.get(frame.stream)
            if stream is not None:
                stream.stop(Abort.BROKER_CANCEL)

    def _open(self, frame: Open) -> None:
        stream = _Stream(frame)
        self.streams[frame.stream] = stream
        self._idle.clear()
        self.metrics.active_streams.inc()
        refusal: StreamError | None
        if self.draining:
            refusal = StreamError(code=ErrorCode.GOING_AWAY, message="connector is shutting down")
        else:
            refusal = self.policy.admit(frame.principal)
            stream.admitted = refusal is None
        task = self._tg.create_task(self._run(stream, refusal), name=f"stream-{frame.stream}")
        stream.task = task
        task.add_done_callback(lambda _: self._reap(stream))

    def _reap(self, stream: _Stream) -> None:
        del self.streams[stream.id]
        self.metrics.active_streams.dec()
        self._release(stream)
        if not self.streams:
            self._idle.set()

    # -- control from the link ----------------------------------------------------------------

    def abort_all(self, why: Abort) -> None:
        """Stop every stream (forced shutdown, relay lost)."""
        for stream in list(self.streams.values()):
            stream.stop(why)

    async def wait_idle(self) -> None:
        """Return once no stream is in progress."""
        await self._idle.wait()

    # -- one stream -------------------------------------------------------------------------

    async def _run(self, stream: _Stream, refusal: StreamError | None) -> None:
        try:
            await self._serve_stream(stream, refusal)
        except Exception:  # a bug in one stream must not take the relay and its streams down
            log.exception("stream_task_failed", stream=stream.id)

    async def _serve_stream(self, stream: _Stream, refusal: StreamError | None) -> None:
        stream.started = True
        loop = asyncio.get_running_loop()
        rec = _Record(loop.time())
        try:
            if stream.abort is not None:
                raise asyncio.CancelledError
            if refusal is not None:
                rec.error = refusal
                await self._end(stream, error=refusal)
                return
            deadline = stream.open.deadline_ms
            async with asyncio.timeout(None if deadline is None else deadline / 1000):
                await self._serve(stream, rec)
        except StreamFailure as exc:
            rec.error = exc.error()
            if stream.head_sent and exc.code is not ErrorCode.UPSTREAM_INTERRUPTED:
                rec.error = StreamError(code=ErrorCode.UPSTREAM_INTERRUPTED, message=exc.message)
            await self._end(stream, error=rec.error)
        except TimeoutError:  # the broker's deadline
            code = (
                ErrorCode.UPSTREAM_INTERRUPTED if stream.head_sent else ErrorCode.UPSTREAM_TIMEOUT
            )
            rec.error = StreamError(code=code, message="the request's deadline passed")
            await self._end(stream, error=rec.error)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if stream.abort is None or (task is not None and task.uncancel() > 0):
                raise  # not ours: the task group is shutting down
            rec.error = self._aborted(stream)
            if rec.error is not None:
                await self._end(stream, error=rec.error)
        except RelayGone:
            rec.error = StreamError(code=ErrorCode.CANCELLED, message="relay lost")
        except Exception as exc:
            log.exception("stream_failed", stream=stream.id)
            rec.error = StreamError(code=ErrorCode.INTERNAL, message=type(exc).__name__)
            await self._end(stream, error=rec.error)
        finally:
            self._record(stream, rec, loop.time())

    def _aborted(self, stream: _Stream) -> StreamError | None:
        if stream.abort is Abort.BROKER_CANCEL:
            return StreamError(code=ErrorCode.CANCELLED, message="cancelled by the broker")
        if stream.abort is Abort.SHUTDOWN:
            if stream.head_sent:
                return StreamError(
                    code=ErrorCode.UPSTREAM_INTERRUPTED, message="the connector shut down"
                )
            return StreamError(code=ErrorCode.GOING_AWAY, message="the connector shut down")
        return None  # relay lost: nobody to tell

    async def _serve(self, stream: _Stream, rec: "_Record") -> None:
        body = await stream.body()
        stream.parts = []
        inject = self.upstream.stream_options_ok
        if plan_in_thread(body):  # a large body is scanned in Python: keep the loop free
            req = await asyncio.to_thread(plan_request, stream.open, body, inject_usage=inject)
        else:
            req = plan_request(stream.open, body, inject_usage=inject)
        rec.model = req.model
        stream.model = req.model
        async with self.upstream.open(req) as resp:
            rec.status = resp.status
            stream.head_sent = True  # from here on a failure is an interruption, not a retry
            await self._send(Head(stream=stream.id, status=resp.status, headers=resp.headers))
            tap = UsageTap(resp.usage_mode)
            read, feed = resp.read, tap.feed
            while chunk := await read():
                if rec.ttfb is None:
                    rec.ttfb = asyncio.get_running_loop().time() - rec.start
                out = feed(chunk)
                if out:
                    stream.events += out.count(b"data:")
                    await self._data(stream, out)
            rest = tap.finish()
            if rest:
                await self._data(stream, rest)
        rec.usage = tap.usage
        await self._send_end(stream, End(stream=stream.id, usage=rec.usage))

    async def _data(self, stream: _Stream, chunk: bytes) -> None:
        """Send ``chunk`` within the stream's credit, waiting for ``credit`` when it is spent."""
        session, sid = self.session, stream.id
        while True:
            room = session.available(sid)
            if room <= 0:
                stream.credit.clear()
                await stream.credit.wait()
                continue
            room = min(room, session.max_data_chunk)
            if len(chunk) <= room:
                await self._send(Data(stream=sid, chunk=chunk))
                stream.nbytes += len(chunk)
                return
            await self._send(Data(stream=sid, chunk=chunk[:room]))
            stream.nbytes += room
            chunk = chunk[room:]

    def _release(self, stream: _Stream) -> None:
        """Give the policy slot back just before ``end``: once the broker sees it, it may open
        the next stream, and that one must not be refused for a slot this one still held."""
        if stream.admitted:
            stream.admitted = False
            self.policy.release(stream.open.principal)

    async def _end(self, stream: _Stream, *, error: StreamError) -> None:
        with contextlib.suppress(RelayGone):
            await self._send_end(stream, End(stream=stream.id, error=error))

    async def _send_end(self, stream: _Stream, frame: End) -> None:
        """Send the stream's one ``end`` (a second one, after a crossing cancel, is skipped)."""
        if stream.ended:
            return
        stream.ended = True
        self._release(stream)
        await self._send(frame)

    def _record(self, stream: _Stream, rec: "_Record", now: float) -> None:
        """The stream's log line and metrics."""
        if rec.error is not None:
            outcome = ErrorCode.parse(rec.error.code).name.lower()
        elif rec.status is not None and rec.status >= 400:
            outcome = f"http_{rec.status // 100}xx"
        else:
            outcome = "ok"
        usage = rec.usage or _NO_USAGE
        duration = now - rec.start
        if rec.model is None:
            model = "none"
        else:
            model = rec.model if rec.model in self._known_models() else "other"
        self.metrics.stream_done(
            model=model,
            outcome=outcome,
            ttfb=rec.ttfb,
            duration=duration,
            nbytes=stream.nbytes,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
        if rec.error is not None and rec.error.code in _UPSTREAM_CODES:
            self.metrics.upstream_errors.labels(outcome).inc()
        frame = stream.open
        if self.records is not None:
            self.records.stream_done(
                frame,
                model=rec.model,
                status=rec.status,
                error=rec.error,
                usage=rec.usage,
                ttfb_s=rec.ttfb,
                duration_s=duration,
            )
        log.info(
            "request",
            correlation_id=frame.correlation_id,
            stream=stream.id,
            user_id=frame.principal.user_id,
            method=frame.method,
            path=frame.path[:100],
            model=rec.model,
            status=rec.status,
            outcome=outcome,
            error=rec.error.message if rec.error is not None else None,
            ttfb_ms=None if rec.ttfb is None else round(rec.ttfb * 1000, 1),
            duration_ms=round(duration * 1000, 1),
            prompt_tokens=usage.prompt_tokens if rec.usage else None,
            completion_tokens=usage.completion_tokens if rec.usage else None,
            bytes=stream.nbytes,
        )


_NO_USAGE = Usage()
_UPSTREAM_CODES = frozenset(
    {ErrorCode.UPSTREAM_UNREACHABLE, ErrorCode.UPSTREAM_TIMEOUT, ErrorCode.UPSTREAM_INTERRUPTED}
)


class _Record:
    """What one stream's log line and metrics report."""

    __slots__ = ("error", "model", "start", "status", "ttfb", "usage")

    def __init__(self, start: float) -> None:
        self.start = start
        self.model: str | None = None
        self.status: int | None = None
        self.ttfb: float | None = None
        self.usage: Usage | None = None
        self.error: StreamError | None = None
