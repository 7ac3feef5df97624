"""One relay connection, from dial to close: the thin I/O shell around ``ConnectorSession``.

It dials ``/v1/relay`` with the token and the subprotocols of every wire version this release
speaks, sends ``hello``, waits for ``welcome``, then pumps: each binary message goes through
``session.receive`` to the dispatcher, each frame a stream task sends goes through
``session.send`` to the socket. A dead link is noticed within about
``ping_interval_s + ping_timeout_s + CLOSE_TIMEOUT_S`` (5 + 7 + 2 = 14 s by default): no pong
and none of our bytes acknowledged for that long (``liveness``), so a slow, throttled link
with a backlog ahead of the pings is not taken for a dead one.

A frame the session rejects closes the connection with the error's close code and one log line;
the service then reconnects. Nothing the broker sends can crash the process.

``run`` returns a ``LinkResult`` that the backoff policy reads: did the handshake complete, and
did the broker end the connection on purpose (``goaway``, close 1000/1001)?
"""

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Final, NamedTuple

import structlog
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from remotellm_connector.__about__ import __version__
from remotellm_connector.discovery import ModelWatcher
from remotellm_connector.dispatch import Abort, Dispatcher, RelayGone
from remotellm_connector.liveness import Liveness
from remotellm_connector.metrics import Metrics
from remotellm_connector.policy import Policy
from remotellm_connector.records import StreamLog
from remotellm_connector.upstream import Upstream
from remotellm_connector.writer import FrameWriter
from remotellm_protocol import (
    SUBPROTOCOLS,
    CloseCode,
    ConnectorSession,
    Frame,
    GoAway,
    Hello,
    LocalProtocolError,
    Models,
    Open,
    RemoteProtocolError,
    SessionState,
    Welcome,
)

__all__ = ["Link", "LinkResult", "explain_connect_error", "open_relay"]

log = structlog.get_logger("remotellm_connector.link")

#: Largest WebSocket message accepted; the session enforces the broker's own frame limit.
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
HANDSHAKE_TIMEOUT_S: Final = 10.0
#: How long a close handshake may take; it adds to the ping timeout when the link is dead.
CLOSE_TIMEOUT_S: Final = 2.0
#: How long a forced shutdown waits for streams to send their error ``end``.
FORCED_END_S: Final = 2.0


class LinkResult(NamedTuple):
    """How a connection ended, for the reconnect policy."""

    connected: bool
    planned: bool = False
    replaced: bool = False
    reason: str = ""
    #: The broker opened at least one stream on it: it was up and serving.
    served: bool = False


class HandshakeError(Exception):
    """The broker accepted the WebSocket but not the relay handshake."""


async def open_relay(
    url: str,
    token: str,
    hello: Hello,
    *,
    ping_interval: float | None = 5.0,
    ping_timeout: float | None = 10.0,
) -> tuple[ClientConnection, ConnectorSession, Welcome]:
    """Dial the broker and complete ``hello``/``welcome``; ``check`` uses it too."""
    ws = await connect(
        url,
        subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
        additional_headers={"Authorization": f"Bearer {token}"},
        user_agent_header=f"remotellm-connector/{__version__}",
        compression=None,  # msgpack of mostly-fresh text: deflate costs CPU for little
        open_timeout=HANDSHAKE_TIMEOUT_S,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=CLOSE_TIMEOUT_S,
        max_size=MAX_MESSAGE_BYTES,
        max_queue=64,
        write_limit=256 * 1024,
    )
    try:
        if ws.subprotocol not in SUBPROTOCOLS:
            raise HandshakeError(
                f"the broker did not accept wire version {', '.join(SUBPROTOCOLS)}"
            )
        sock = ws.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = ConnectorSession()
        await ws.send(session.send(hello))
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            message = await ws.recv()
        if not isinstance(message, bytes):
            raise RemoteProtocolError("text message on the relay")
        welcome = session.receive(message)
        assert isinstance(welcome, Welcome)
    except BaseException as exc:
        code = exc.close_code if isinstance(exc, RemoteProtocolError) else CloseCode.NORMAL
        await ws.close(code)
        raise
    return ws, session, welcome


class Link:
    """Serves one relay connection until it ends."""

    def __init__(
        self,
        *,
        url: str,
        token: str,
        name: str,
        max_streams: int,
        upstream: Upstream,
        policy: Policy,
        metrics: Metrics,
        watcher: ModelWatcher,
        ping_interval: float = 5.0,
        ping_timeout: float = 7.0,
        on_connected: Callable[[], None] = lambda: None,
        records: StreamLog | None = None,
    ) -> None:
        self.records = records
        self.url, self._token, self.name, self.max_streams = url, token, name, max_streams
        self.upstream, self.policy, self.metrics, self.watcher = upstream, policy, metrics, watcher
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self._on_connected = on_connected
        self.connected = False
        #: Set when the broker sent ``goaway``: it drains (a restart). Its streams finish on
        #: this link while the service already dials the next one.
        self.broker_goaway = asyncio.Event()
        self.dispatcher: Dispatcher | None = None
        self.writer: FrameWriter | None = None

    async def run(self, stopping: asyncio.Event, forced: asyncio.Event, grace: float) -> LinkResult:
        """Connect and serve until the connection ends or a shutdown completes."""
        seen = self.watcher.version
        hello = Hello(
            name=self.name,
            version=__version__,
            models=list(self.watcher.models),
            max_streams=self.max_streams,
        )
        # No websockets keepalive: ``Liveness`` pings and judges the link by progress.
        dial = asyncio.ensure_future(
            open_relay(self.url, self._token, hello, ping_interval=None, ping_timeout=None)
        )
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait((dial, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not dial.done():
            dial.cancel()
            await asyncio.gather(dial, return_exceptions=True)
            return LinkResult(connected=False, planned=True, reason="shutting down")
        try:
            ws, session, welcome = dial.result()
        except Exception as exc:
            return LinkResult(connected=False, reason=explain_connect_error(exc)[0])
        self.connected = True
        self._on_connected()
        log.info("relay_up", url=self.url, session=welcome.session_id, models=len(hello.models))
        try:
            return await self._serve(ws, session, seen, stopping, forced, grace)
        finally:
            self.connected = False

    async def _serve(
        self,
        ws: ClientConnection,
        session: ConnectorSession,
        seen: int,
        stopping: asyncio.Event,
        forced: asyncio.Event,
        grace: float,
    ) -> LinkResult:
        writer = self.writer = FrameWriter(ws)
        write, drain, encode = writer.write, writer.drain, session.send

        async def send(frame: Frame) -> None:
            try:
                data = encode(frame)
            except LocalProtocolError:
                if session.state is SessionState.CLOSED:
                    raise RelayGone from None
                raise
            write(data)  # RelayGone once the connection is closing
            await drain()

        state = _LinkState()
        async with asyncio.TaskGroup() as tg:
            dispatcher = self.dispatcher = Dispatcher(
                session=session,
                send=send,
                upstream=self.upstream,
                policy=self.policy,
                metrics=self.metrics,
                task_group=tg,
                known_models=lambda: self.watcher.model_ids,
                records=self.records,
            )
            helpers = [
                tg.create_task(self._watch(ws, writer, state)),
                tg.create_task(self._announce(send, seen)),
                tg.create_task(self._drain(ws, send, dispatcher, stopping, forced, grace, state)),
            ]
            try:
                await self._pump(ws, session, dispatcher, state)
            finally:
                for helper in helpers:
                    helper.cancel()
                if session.state is not SessionState.CLOSED:
                    session.connection_lost()
                dispatcher.abort_all(Abort.RELAY_LOST)
        rcvd = ws.close_code
        planned = state.planned or state.goaway or rcvd in (CloseCode.NORMAL, CloseCode.GOING_AWAY)
        replaced = rcvd == CloseCode.REPLACED
        reason = state.reason or f"closed by the broker ({rcvd} {ws.close_reason or ''})".strip()
        if replaced:
            log.warning("relay_replaced", hint="another connector uses the same --name")
        return LinkResult(
            connected=True, planned=planned, replaced=replaced, reason=reason, served=state.served
        )

    async def _pump(
        self,
        ws: ClientConnection,
        session: ConnectorSession,
        dispatcher: Dispatcher,
        state: "_LinkState",
    ) -> None:
        handle = dispatcher.handle
        try:
            async for message in ws:
                if not isinstance(message, bytes):
                    raise RemoteProtocolError("text message on the relay")
                frame = session.receive(message)
                state.received += 1
                if type(frame) is GoAway:
                    state.goaway = True
                    self.broker_goaway.set()
                    log.info("broker_goaway", reason=frame.reason)
                elif type(frame) is Open:
                    state.served = True
                handle(frame)
        except RemoteProtocolError as err:
            state.reason = f"protocol error: {err.message}"
            log.warning("relay_protocol_error", error=err.message, close_code=int(err.close_code))
            if self.writer is not None:
                self.writer.flush()
            await ws.close(err.close_code, err.message[:120])
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is None:  # the broker said nothing: we closed, or the link died
                what = f"{exc.sent.code} {exc.sent.reason}" if exc.sent else "no close frame"
                state.reason = f"connection lost ({what})".strip()

    async def _watch(self, ws: ClientConnection, writer: FrameWriter, state: "_LinkState") -> None:
        """Close the connection once ``Liveness`` finds it dead."""
        liveness = Liveness(
            ws,
            lambda: writer.written,
            lambda: state.received,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
        )
        why = await liveness.run()
        state.reason = f"connection lost ({why})"
        log.warning("relay_dead", reason=why)
        await ws.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    async def _announce(self, send: Callable[[Frame], Awaitable[None]], seen: int) -> None:
        """Send ``models`` whenever discovery reports a change."""
        while True:
            seen = await self.watcher.wait_changed(seen)
            try:
                await send(Models(models=list(self.watcher.models)))
            except RelayGone:
                return
            log.info("models_announced", models=[m.id for m in self.watcher.models])

    async def _drain(
        self,
        ws: ClientConnection,
        send: Callable[[Frame], Awaitable[None]],
        dispatcher: Dispatcher,
        stopping: asyncio.Event,
        forced: asyncio.Event,
        grace: float,
        state: "_LinkState",
    ) -> None:
        """On shutdown: ``goaway``, let streams finish within ``grace``, then close."""
        await stopping.wait()
        state.planned = True
        state.reason = "connector shutting down"
        dispatcher.draining = True
        try:
            await send(GoAway(reason="connector shutting down"))
        except RelayGone:
            return
        in_flight = len(dispatcher.streams)
        log.info("draining", streams=in_flight, grace_s=grace)
        idle = asyncio.ensure_future(dispatcher.wait_idle())
        force = asyncio.ensure_future(forced.wait())
        try:
            await asyncio.wait((idle, force), timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()
        if not idle.done():
            log.warning("drain_incomplete", streams=len(dispatcher.streams), forced=forced.is_set())
            dispatcher.abort_all(Abort.SHUTDOWN)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle, FORCED_END_S)
        if self.writer is not None:
            self.writer.flush()  # the last ``end`` frames go before the close frame
        await ws.close(CloseCode.GOING_AWAY, "connector shutting down")


class _LinkState:
    __slots__ = ("goaway", "planned", "reason", "received", "served")

    def __init__(self) -> None:
        self.received = 0
        self.goaway = False
        self.served = False
        self.planned = False
        self.reason = ""


def explain_connect_error(exc: BaseException) -> tuple[str, str]:
    """``(what went wrong, how to fix it)`` for a failure to reach the broker."""
    upgrade = "upgrade remotellm-connector and the broker to compatible releases"
    if isinstance(exc, websockets.InvalidStatus):
        return _explain_status(exc.response.status_code)
    if isinstance(exc, HandshakeError | websockets.NegotiationError):
        return (str(exc), upgrade)
    if isinstance(exc, RemoteProtocolError):
        return (f"the broker broke the relay protocol: {exc.message}", upgrade)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not trusted: {exc.verify_message}",
            "check the host name in --broker-url; a private CA goes in SSL_CERT_FILE",
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS error: {exc.reason or exc}",
            "use ws:// for a broker without TLS, wss:// (or https://) for one with TLS",
        )
    if isinstance(exc, websockets.InvalidURI):
        return (f"not a WebSocket URL: {exc.uri}", "use wss://host or https://host")
    if isinstance(exc, websockets.ConnectionClosed) and exc.rcvd is not None:
        refused = _REFUSALS.get(exc.rcvd.code)
        if refused is not None:
            return (f"the broker refused this connector: {exc.rcvd.reason}", refused)
    for kind, problem, fix in _OS_ERRORS:
        if isinstance(exc, kind):
            return (problem.format(exc=exc), fix)
    return (f"{type(exc).__name__}: {exc}", "check --broker-url")


#: How to fix the broker's refusals of a connector identity (close codes with a reason).
_REFUSALS: Final[dict[int, str]] = {
    CloseCode.NAME_TAKEN: (
        "pass the --name this token is bound to (the reason names it), or ask the operator "
        "for a token of your own"
    ),
    CloseCode.TOKEN_REVOKED: "the token was revoked: ask the operator for a new one",
}


_OS_ERRORS: Final = (
    (socket.gaierror, "unknown host ({exc.strerror})", "check the host name in --broker-url"),
    (ConnectionRefusedError, "connection refused", "is the broker running, is the port right?"),
    (
        TimeoutError,
        "timed out",
        "check the URL and that a firewall lets outbound traffic through",
    ),
    (websockets.InvalidHandshake, "not a remotellm broker: {exc}", "check --broker-url"),
    (OSError, "network error: {exc}", "check --broker-url and the network"),
)


def _explain_status(status: int) -> tuple[str, str]:
    if status == 401:
        return (
            "the broker rejected the connector token (HTTP 401)",
            "check REMOTELLM_CONNECTOR_TOKEN / --token-file; ask the operator for a token "
            "(remotellm-broker tokens create NAME)",
        )
    if status == 403:
        return ("the broker refused this connector (HTTP 403)", "ask the broker's operator")
    if status in (400, 426):
        return (
            f"the broker does not speak wire version {', '.join(SUBPROTOCOLS)} (HTTP {status})",
            "upgrade remotellm-connector and the broker to compatible releases",
        )
    if status == 404:
        return (
            "no relay endpoint at this URL (HTTP 404)",
            "use the broker's address, e.g. wss://broker.example.com (path /v1/relay)",
        )
    return (f"the broker answered HTTP {status}", "check --broker-url")
