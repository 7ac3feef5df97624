"""The relay endpoint ``/v1/relay``: where connectors dial in.

The upgrade is refused over plain HTTP before any frame when the connector token is wrong
(401), when the request is not a WebSocket upgrade (400) or when the connector speaks no
wire version we do (426). After the upgrade the connector must send ``hello`` within the
handshake timeout; the broker answers ``welcome`` with the limits in force and registers the
connector, replacing a stale connection of the same name at once.

A connector token is one identity (``tokenlinks``): it holds at most ``max_links_per_token``
links (429 before the upgrade beyond that), it attaches under one connector name only (a
name of another token is refused with close code 4002 and a reason), and revoking it closes
its links (4003) at the next users.yaml poll. What a connector announces is bounded by
``announce``; what it answers is framed by the broker (``framing``, in ``forward``).

Liveness is WebSocket ping/pong (aiohttp's ``heartbeat``): a connector that stops answering
is dropped after one and a half heartbeat periods, and every stream in flight on it ends
with an error (or is retried elsewhere when nothing was sent yet). A peer that breaks the
protocol gets the close code of its ``RemoteProtocolError`` and one warning line.
"""

from __future__ import annotations

import functools
import uuid

import msgspec
from aiohttp import WSMsgType, web

from remotellm_broker.credentials import bearer_token
from remotellm_broker.link import ConnectorLink
from remotellm_broker.logs import get_logger
from remotellm_broker.openai_errors import OpenAIError
from remotellm_broker.state import BROKER, BrokerState
from remotellm_broker.tokenlinks import PROBE_SUFFIX, Lease
from remotellm_protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    BrokerSession,
    CloseCode,
    Hello,
    LocalProtocolError,
    RemoteProtocolError,
    Welcome,
    choose_subprotocol,
)
from remotellm_protocol.limits import HELLO_MAX_FRAME_BYTES

__all__ = ["relay_endpoint"]

log = get_logger("remotellm_broker.relay")

_MAX_NAME = 128
_CLOSE_TIMEOUT_S = 2.0


async def relay_endpoint(request: web.Request) -> web.StreamResponse:
    """Accept one connector connection and serve it until it closes."""
    state = request.app[BROKER]
    token = bearer_token(request.headers.get("Authorization"))
    token_name = state.connector_token_name(token)
    if token is None or token_name is None:
        raise OpenAIError(401, "Invalid or missing connector token.", code="invalid_token")
    if state.draining:
        raise OpenAIError(503, "The broker is shutting down.", code="server_shutting_down")
    offered = [
        name.strip()
        for header in request.headers.getall("Sec-WebSocket-Protocol", [])
        for name in header.split(",")
    ]
    chosen = choose_subprotocol(offered)
    ws = web.WebSocketResponse(
        protocols=(chosen,) if chosen else (),
        heartbeat=state.heartbeat_s,
        autoping=True,
        compress=False,
        max_msg_size=max(DEFAULT_MAX_FRAME_BYTES, HELLO_MAX_FRAME_BYTES) + 1024,
        timeout=_CLOSE_TIMEOUT_S,
    )
    if not ws.can_prepare(request).ok:
        raise OpenAIError(400, "Expected a WebSocket upgrade.", code="websocket_required")
    if chosen is None:
        raise OpenAIError(
            426,
            "No common relay protocol version: this broker speaks remotellm.v1.",
            code="unsupported_protocol",
            headers={"Upgrade": "websocket"},
        )
    lease = state.token_links.lease(token_name, token)
    if lease is None:
        log.warning("connector_refused_too_many_links", token=token_name, remote=request.remote)
        raise OpenAIError(
            429,
            f"This connector token already holds {state.token_links.max_links} links "
            "(max_links_per_token).",
            code="too_many_links",
            headers={"Retry-After": "10"},
        )
    try:
        await ws.prepare(request)
        await _serve(state, ws, request, lease)
    finally:
        state.token_links.release(lease)
    return ws


async def _serve(
    state: BrokerState, ws: web.WebSocketResponse, request: web.Request, lease: Lease
) -> None:
    """Handshake, then relay until the socket closes; ``lease`` is revocable throughout."""
    registered: list[ConnectorLink] = []

    def revoke() -> None:
        for link in registered:
            state.remove_link(link)
        state.spawn(ws.close(code=CloseCode.TOKEN_REVOKED, message=b"connector token revoked"))

    lease.on_revoke = revoke
    link = await _handshake(state, ws, request, lease)
    if link is None:
        return
    registered.append(link)
    token_name = lease.token_name
    log.info(
        "connector_connected",
        connector=link.name,
        session_id=link.session_id,
        token=token_name,
        version=link.version[:40],
        models=sorted(link.models)[:50],
        max_streams=link.max_streams,
        remote=request.remote,
    )
    writer = state.spawn(link.run_writer())
    try:
        await _read(ws, link)
    finally:
        state.remove_link(link)
        writer.cancel()
        log.info("connector_disconnected", connector=link.name, session_id=link.session_id)


async def _handshake(
    state: BrokerState, ws: web.WebSocketResponse, request: web.Request, lease: Lease
) -> ConnectorLink | None:
    """Read ``hello``, answer ``welcome``, register the link; None if the peer failed."""
    session = BrokerSession()
    hello = await _read_hello(state, ws, request, session)
    if hello is None:
        return None
    refusal = _admit(state, lease, hello)
    if refusal is not None:
        log.warning(
            "connector_refused",
            remote=request.remote,
            token=lease.token_name,
            connector=hello.name,
            reason=refusal.message,
            close_code=int(refusal.close_code),
        )
        await ws.close(code=refusal.close_code, message=refusal.message[:120].encode())
        return None
    models = state.announcements.bounded(hello.models, connector=hello.name)
    if len(models) != len(hello.models):
        hello = msgspec.structs.replace(hello, models=models)
    session_id = uuid.uuid4().hex
    welcome = Welcome(
        session_id=session_id,
        max_frame_bytes=DEFAULT_MAX_FRAME_BYTES,
        initial_window=state.settings.stream_window,
        heartbeat_s=state.heartbeat_s,
    )
    try:
        await ws.send_bytes(session.send(welcome))
    except ConnectionError:
        return None
    link = ConnectorLink(
        ws=ws,
        session=session,
        hello=hello,
        session_id=session_id,
        on_release=state.release,
        on_models=functools.partial(state.announce_models, lease.token_name),
    )
    if lease.revoked:  # users.yaml changed while it was saying hello
        return None
    if state.draining:
        link.go_away()
    replaced = state.add_link(link)
    if replaced is not None:
        log.info("connector_replaced", connector=link.name, old_session_id=replaced.session_id)
    return link


async def _read_hello(
    state: BrokerState, ws: web.WebSocketResponse, request: web.Request, session: BrokerSession
) -> Hello | None:
    """The connector's valid ``hello``, or None when it failed (the socket is then closed)."""
    try:
        msg = await ws.receive(timeout=state.handshake_timeout_s)
    except TimeoutError:
        log.warning("connector_handshake_timeout", remote=request.remote)
        await ws.close(code=CloseCode.HANDSHAKE_TIMEOUT, message=b"no hello in time")
        return None
    if msg.type is not WSMsgType.BINARY:
        if msg.type not in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            log.warning("connector_handshake_failed", remote=request.remote, got=msg.type.name)
            await ws.close(code=CloseCode.PROTOCOL_ERROR, message=b"expected hello")
        return None
    try:
        hello = session.receive(msg.data)
        if not isinstance(hello, Hello):  # pragma: no cover - the session guarantees it
            raise RemoteProtocolError("expected hello")
        if not hello.name or len(hello.name) > _MAX_NAME or not hello.name.isprintable():
            raise RemoteProtocolError("hello.name must be 1-128 printable characters")
    except RemoteProtocolError as err:
        log.warning("connector_protocol_error", remote=request.remote, error=err.message[:200])
        await ws.close(code=err.close_code, message=err.message[:120].encode())
        return None
    return hello


def _admit(state: BrokerState, lease: Lease, hello: Hello) -> RemoteProtocolError | None:
    """Why this token may not attach with this ``hello``, or None (then it is bound)."""
    if not state.announcements.allow(lease.token_name):
        return RemoteProtocolError(
            "models announced too often: wait before reconnecting (model_announcements_per_minute)",
            CloseCode.POLICY_VIOLATION,
        )
    probe = not hello.models and hello.name.endswith(PROBE_SUFFIX)
    problem = state.token_links.bind(lease, hello.name, state.token_owner, probe=probe)
    if problem is not None:
        return RemoteProtocolError(problem, CloseCode.NAME_TAKEN)
    return None


async def _read(ws: web.WebSocketResponse, link: ConnectorLink) -> None:
    """Feed every message to the link until the socket closes or the peer misbehaves."""
    try:
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                link.feed(msg.data)
            elif msg.type is WSMsgType.ERROR:
                return
            else:
                raise RemoteProtocolError(f"unexpected {msg.type.name.lower()} message")
    except RemoteProtocolError as err:
        log.warning(
            "connector_protocol_error",
            connector=link.name,
            session_id=link.session_id,
            error=err.message[:200],
            close_code=int(err.close_code),
        )
        link.lost()
        await ws.close(code=err.close_code, message=err.message[:120].encode())
    except LocalProtocolError as err:  # a bug on our side: drop the connection, say why
        log.error("relay_bug", connector=link.name, error=err.message[:200])
        link.lost()
        await ws.close(code=CloseCode.INTERNAL_ERROR, message=b"internal error")
