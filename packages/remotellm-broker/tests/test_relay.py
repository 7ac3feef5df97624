"""The relay endpoint as a connector sees it: refusals before any frame, the handshake,
limits in ``welcome``, protocol errors closing with the right code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from broker_rig import Rig, running_broker, wait_for
from connector_peer import ConnectorPeer
from remotellm_protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    CloseCode,
    ConnectorSession,
    Data,
    Hello,
    Welcome,
    decode,
    encode,
)


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path, stream_window=128 * 1024, handshake_timeout_s=0.3) as rig:
        yield rig


async def _dial(
    rig: Rig, token: str | None = None, protocols: tuple[str, ...] = ("remotellm.v1",)
) -> aiohttp.ClientWebSocketResponse:
    return await rig.http.ws_connect(
        rig.relay_url,
        headers={"Authorization": f"Bearer {token or rig.token}"},
        protocols=protocols,
    )


async def test_a_bad_token_is_refused_with_401_before_any_frame(rig: Rig) -> None:
    for token in ["rct-" + "0" * 48, "garbage", "x" * 5000]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await _dial(rig, token)
        assert caught.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await rig.http.ws_connect(rig.relay_url, protocols=("remotellm.v1",))
    assert caught.value.status == 401


async def test_no_common_wire_version_is_refused_with_426(rig: Rig) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await _dial(rig, protocols=("remotellm.v2", "chat"))
    assert caught.value.status == 426


async def test_the_highest_common_version_is_chosen(rig: Rig) -> None:
    ws = await _dial(rig, protocols=("remotellm.v9", "remotellm.v1"))
    assert ws.protocol == "remotellm.v1"
    await ws.close()


async def test_a_plain_http_request_to_the_relay_is_400(rig: Rig) -> None:
    async with rig.http.get(
        rig.relay_url.replace("ws://", "http://"), headers={"Authorization": f"Bearer {rig.token}"}
    ) as resp:
        assert resp.status == 400


async def test_welcome_announces_the_limits_in_force(rig: Rig) -> None:
    peer = ConnectorPeer(rig.relay_url, rig.token)
    rig.peers.append(peer)
    welcome = await peer.connect()
    assert welcome.initial_window == 128 * 1024
    assert welcome.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES
    assert welcome.heartbeat_s > 0
    assert welcome.session_id


async def test_no_hello_in_time_closes_with_handshake_timeout(rig: Rig) -> None:
    ws = await _dial(rig)
    msg = await ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == CloseCode.HANDSHAKE_TIMEOUT
    assert len(rig.state.registry) == 0


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (b"\xc1 not msgpack", CloseCode.PROTOCOL_ERROR),
        (encode(Data(stream=1, chunk=b"x")), CloseCode.PROTOCOL_ERROR),
        (encode(Hello(name="", version="1")), CloseCode.PROTOCOL_ERROR),
        (encode(Hello(name="x", version="1", max_streams=0)), CloseCode.PROTOCOL_ERROR),
    ],
)
async def test_a_bad_first_frame_closes_with_its_code(
    rig: Rig, first: bytes, code: CloseCode
) -> None:
    ws = await _dial(rig)
    await ws.send_bytes(first)
    msg = await ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == code


async def test_a_text_message_after_the_handshake_is_a_protocol_error(rig: Rig) -> None:
    ws = await _dial(rig)
    session = ConnectorSession()
    await ws.send_bytes(session.send(Hello(name="t", version="1")))
    assert isinstance(decode((await ws.receive(timeout=3)).data), Welcome)
    await wait_for(lambda: len(rig.state.registry) == 1)
    await ws.send_str("hello?")
    msg = await ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == CloseCode.PROTOCOL_ERROR
    await wait_for(lambda: len(rig.state.registry) == 0)


async def test_a_frame_for_an_unknown_stream_closes_the_connection(rig: Rig) -> None:
    ws = await _dial(rig)
    session = ConnectorSession()
    await ws.send_bytes(session.send(Hello(name="t", version="1")))
    await ws.receive(timeout=3)
    await ws.send_bytes(encode(Data(stream=7, chunk=b"x")))
    msg = await ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == CloseCode.PROTOCOL_ERROR


async def test_an_oversized_message_is_refused(rig: Rig) -> None:
    ws = await _dial(rig)
    session = ConnectorSession()
    await ws.send_bytes(session.send(Hello(name="t", version="1")))
    await ws.receive(timeout=3)
    await ws.send_bytes(b"\x00" * (DEFAULT_MAX_FRAME_BYTES + 4096))
    msg = await ws.receive(timeout=3)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert ws.close_code == CloseCode.MESSAGE_TOO_BIG


async def test_a_dropped_connector_stays_listed_unavailable_for_the_model_memory(
    rig: Rig,
) -> None:
    peer = await rig.peer(models=["gone"])
    async with rig.http.get(rig.url + "/v1/models", headers=rig.auth) as resp:
        assert [(m["id"], m["available"]) for m in (await resp.json())["data"]] == [("gone", True)]
    await peer.drop()
    await wait_for(lambda: len(rig.state.registry) == 0)
    async with rig.http.get(rig.url + "/v1/models", headers=rig.auth) as resp:
        assert [(m["id"], m["available"]) for m in (await resp.json())["data"]] == [("gone", False)]
    await asyncio.sleep(0)
