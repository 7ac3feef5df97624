"""A hostile connector cannot shape the HTTP response a client receives (issue 11 item 1).

Each test plays the attacker with ``HostileConnector``: a valid token, then raw frames the
protocol's own session would refuse to send. The client is a plain aiohttp client, and for
smuggling a raw socket that reads exactly what the broker wrote.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from broker_rig import Rig, assert_openai_error, running_broker, wait_for
from hostile_connector import HostileConnector, head, hello
from remotellm_protocol import CloseCode, Data, End

FORGED = (
    b"HTTP/1.1 200 OK\r\nSet-Cookie: remotellm_portal=stolen; Path=/\r\nContent-Length: 2\r\n\r\nhi"
)
BODY = b'{"id":"x","object":"chat.completion","choices":[]}'


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path) as rig:
        yield rig


async def _attached(rig: Rig, name: str = "evil") -> HostileConnector:
    evil = HostileConnector(rig.relay_url, rig.token_for(name))
    assert await evil.connect(hello(name)) is not None
    await wait_for(lambda: name in {c.name for c in rig.state.registry})
    return evil


def _chat(stream: bool = False) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}


async def _raw_exchange(rig: Rig, *, within: float = 5.0) -> bytes:
    """POST a chat request on a raw keep-alive socket; everything the broker wrote back
    until it closes the connection or goes quiet for a second."""
    host, port = rig.bound.host, rig.bound.port
    reader, writer = await asyncio.open_connection(host, port)
    body = json.dumps(_chat()).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + rig.key.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    received = bytearray()
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 1.0)
                except TimeoutError:
                    break
                if not chunk:
                    break
                received += chunk
    finally:
        writer.close()
    return bytes(received)


@pytest.mark.parametrize("status", [100, 101, 103, 204, 205, 304])
async def test_a_head_status_without_a_body_gets_the_client_a_502_and_no_smuggled_response(
    rig: Rig, status: int
) -> None:
    async with await _attached(rig) as evil:

        async def attack() -> None:
            opened = await evil.next_open()
            await evil.send_raw(head(opened.stream, status, [("content-type", "text/plain")]))
            await evil.send(Data(stream=opened.stream, chunk=FORGED))
            await evil.send(End(stream=opened.stream))

        attacker = asyncio.create_task(attack())
        raw = await _raw_exchange(rig)
        await attacker
        assert raw.startswith(b"HTTP/1.1 502 "), raw[:200]
        assert raw.count(b"HTTP/1.1") == 1, raw
        assert b"stolen" not in raw
        assert b"bad_connector_response" in raw
        assert await evil.wait_closed() == CloseCode.PROTOCOL_ERROR


async def test_connector_headers_never_reach_the_client_only_the_allowlist_does(
    rig: Rig,
) -> None:
    hostile_headers = [
        ("Set-Cookie", "remotellm_portal=stolen; Path=/"),
        ("Location", "https://evil.example/"),
        ("Content-Length", "3"),
        ("Transfer-Encoding", "identity"),
        ("Connection", "close"),
        ("Keep-Alive", "timeout=1"),
        ("Upgrade", "h2c"),
        ("X-Request-ID", "forged-id"),
        ("x-ratelimit-remaining-requests", "999999"),
        ("Access-Control-Allow-Origin", "*"),
        ("Content-Type", "application/json; charset=utf-8"),
    ]
    async with await _attached(rig) as evil:

        async def answer() -> None:
            opened = await evil.next_open()
            await evil.send_raw(head(opened.stream, 200, hostile_headers))
            await evil.send(Data(stream=opened.stream, chunk=BODY))
            await evil.send(End(stream=opened.stream))

        attacker = asyncio.create_task(answer())
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=_chat(), headers=rig.auth
        ) as resp:
            body = await resp.read()
        await attacker
    assert resp.status == 200
    assert body == BODY  # framed by the broker: all of it, not the 3 bytes it claimed
    for name in ("Set-Cookie", "Location", "Keep-Alive", "Upgrade", "Access-Control-Allow-Origin"):
        assert name not in resp.headers, name
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert resp.headers["X-Request-ID"] != "forged-id"
    assert resp.headers.get("x-ratelimit-remaining-requests") != "999999"
    assert resp.headers.get("Content-Length") in (None, str(len(BODY)))
    assert "close" not in resp.headers.get("Connection", "").lower()


@pytest.mark.parametrize("status", [429, 503])
async def test_the_retry_after_of_a_relayed_429_or_503_reaches_the_client(
    rig: Rig, status: int
) -> None:
    async with await _attached(rig) as evil:

        async def answer() -> None:
            opened = await evil.next_open()
            headers = [("content-type", "application/json"), ("retry-after", "17")]
            await evil.send_raw(head(opened.stream, status, headers))
            await evil.send(Data(stream=opened.stream, chunk=b'{"error":{"message":"busy"}}'))
            await evil.send(End(stream=opened.stream))

        attacker = asyncio.create_task(answer())
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=_chat(), headers=rig.auth
        ) as resp:
            await resp.read()
        await attacker
    assert resp.status == status
    assert resp.headers["Retry-After"] == "17"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html\r\nSet-Cookie: remotellm_portal=stolen",
        "text/html\nSet-Cookie: remotellm_portal=stolen",
        "text/html\x00",
        "text/html\rx",
    ],
)
async def test_a_header_value_with_cr_lf_or_nul_is_dropped(rig: Rig, content_type: str) -> None:
    async with await _attached(rig) as evil:

        async def answer() -> None:
            opened = await evil.next_open()
            headers = [("content-type", content_type), ("retry-after", "5\r\nX-Evil: 1")]
            await evil.send_raw(head(opened.stream, 429, headers))
            await evil.send(Data(stream=opened.stream, chunk=b'{"error":{"message":"slow"}}'))
            await evil.send(End(stream=opened.stream))

        attacker = asyncio.create_task(answer())
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=_chat(), headers=rig.auth
        ) as resp:
            body = await resp.read()
        await attacker
    assert resp.status == 429
    assert resp.headers["Content-Type"] == "application/json"
    assert "Set-Cookie" not in resp.headers
    assert "X-Evil" not in resp.headers
    assert "Retry-After" not in resp.headers
    assert body == b'{"error":{"message":"slow"}}'


async def test_a_stream_gets_the_brokers_own_sse_framing_whatever_the_connector_says(
    rig: Rig,
) -> None:
    async with await _attached(rig) as evil:

        async def answer() -> None:
            opened = await evil.next_open()
            headers = [("content-type", "text/html"), ("set-cookie", "a=b"), ("location", "/")]
            await evil.send_raw(head(opened.stream, 200, headers))
            await evil.send(Data(stream=opened.stream, chunk=b"data: [DONE]\n\n"))
            await evil.send(End(stream=opened.stream))

        attacker = asyncio.create_task(answer())
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=_chat(stream=True), headers=rig.auth
        ) as resp:
            await resp.read()
        await attacker
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert "Set-Cookie" not in resp.headers
    assert "Location" not in resp.headers


async def test_a_protocol_break_on_a_stream_is_a_502_for_that_stream_not_a_retry(
    rig: Rig,
) -> None:
    async with await _attached(rig) as evil:

        async def attack() -> None:
            opened = await evil.next_open()
            await evil.send_raw(head(opened.stream, 204))

        attacker = asyncio.create_task(attack())
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=_chat(), headers=rig.auth
        ) as resp:
            body = await resp.json()
        await attacker
    assert resp.status == 502
    assert_openai_error(body, "bad_connector_response")
    assert "204" in body["error"]["message"]


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(float("inf"), "3600"), (float("nan"), "1"), (1e300, "3600"), (-5.0, "1"), (2.2, "3")],
    ids=["inf", "nan", "1e300", "negative", "plain"],
)
async def test_the_retry_after_a_connector_puts_in_an_error_is_bounded(
    rig: Rig, retry_after: float, expected: str
) -> None:
    async with await _attached(rig) as evil:

        async def refuse() -> None:
            opened = await evil.next_open()
            error = {"code": 7, "message": "slow down", "retry_after": retry_after}
            await evil.send_raw({"t": "end", "stream": opened.stream, "error": error})

        attacker = asyncio.create_task(refuse())
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=_chat(), headers=rig.auth
        ) as resp:
            body = await resp.json()
        await attacker
    assert resp.status == 429
    assert_openai_error(body)
    assert resp.headers["Retry-After"] == expected
