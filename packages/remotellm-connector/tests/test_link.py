"""Dialling the broker: every way the handshake fails is caught and explained."""

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from broker_peer import TOKEN, BrokerPeer
from remotellm_connector.link import explain_connect_error, open_relay
from remotellm_protocol import SUBPROTOCOLS, Hello

HELLO = Hello(name="t", version="0", models=[], max_streams=1)


async def failure(url: str, token: str = TOKEN) -> tuple[str, str]:
    with pytest.raises(Exception) as caught:
        await open_relay(url, token, HELLO, ping_interval=None)
    return explain_connect_error(caught.value)


async def test_handshake_succeeds_with_the_negotiated_version(peer: BrokerPeer) -> None:
    ws, session, welcome = await open_relay(peer.url, TOKEN, HELLO)
    assert ws.subprotocol == SUBPROTOCOLS[0]
    assert welcome.initial_window == peer.window
    assert session.window == peer.window
    await ws.close()
    conn = await peer.next_connection()
    assert conn.hello == HELLO
    assert conn.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert conn.request.headers["User-Agent"].startswith("remotellm-connector/")


async def test_bad_token_is_explained(peer: BrokerPeer) -> None:
    problem, fix = await failure(peer.url, token="wrong")
    assert "401" in problem
    assert "REMOTELLM_CONNECTOR_TOKEN" in fix


async def test_no_common_wire_version_is_explained(peer: BrokerPeer) -> None:
    peer.speaks = (2,)
    problem, fix = await failure(peer.url)
    assert "wire version" in problem
    assert "upgrade" in fix


async def test_wrong_path_is_explained(peer: BrokerPeer) -> None:
    problem, _ = await failure(peer.url.replace("/v1/relay", "/nope"))
    assert "404" in problem


async def test_tls_to_a_plain_server_is_explained(peer: BrokerPeer) -> None:
    problem, fix = await failure(peer.url.replace("ws://", "wss://"))
    assert problem.startswith("TLS error")
    assert "ws://" in fix


async def test_refused_and_unknown_host_are_explained() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    problem, _ = await failure(f"ws://127.0.0.1:{port}/v1/relay")
    assert problem == "connection refused"
    problem, _ = await failure("ws://no-such-host.invalid/v1/relay")
    assert problem.startswith("unknown host")


async def bad_welcome(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=SUBPROTOCOLS)
    await ws.prepare(request)
    await ws.receive()
    await ws.send_bytes(b"\x93not a frame")
    await ws.receive()
    return ws


@pytest.fixture
async def broken_broker() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/relay", bad_welcome)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/relay"
    await runner.cleanup()


async def test_garbage_instead_of_welcome_is_a_protocol_error(broken_broker: str) -> None:
    problem, _ = await failure(broken_broker)
    assert problem.startswith("the broker broke the relay protocol")


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (TimeoutError(), "timed out"),
        (OSError(113, "No route to host"), "network error"),
        (ValueError("odd"), "ValueError"),
    ],
)
def test_other_failures_still_get_an_explanation(exc: Exception, words: Any) -> None:
    problem, fix = explain_connect_error(exc)
    assert words in problem
    assert fix


def test_a_refused_name_says_to_fix_the_name_not_the_url() -> None:
    """A 4002 close said "fix: check --broker-url", which sends the owner the wrong way."""
    from websockets.exceptions import ConnectionClosedError
    from websockets.frames import Close

    reason = "this connector token is bound to connector name 'gpu'"
    exc = ConnectionClosedError(Close(4002, reason), Close(4002, reason), rcvd_then_sent=True)
    problem, fix = explain_connect_error(exc)
    assert reason in problem
    assert "--name" in fix
    assert "--broker-url" not in fix
    revoked = ConnectionClosedError(Close(4003, "token revoked"), None)
    assert "new one" in explain_connect_error(revoked)[1]
