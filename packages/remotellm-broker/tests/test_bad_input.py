"""Whatever a client sends, the answer is a 4xx in OpenAI's error shape, never a 5xx or a
traceback, and the streams of other clients carry on meanwhile."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from broker_rig import Rig, assert_openai_error, read_sse, running_broker
from connector_peer import serve_sse

CHAT_PATH = "/v1/chat/completions"
NESTED = (
    b'{"model":"m","messages":[{"role":"user","content":"x"}],"x":'
    + b"[" * 20_000
    + b"]" * 20_000
    + b"}"
)

# (name, path, body, expected status, expected error code or None)
BODIES: list[tuple[str, str, bytes, int, str | None]] = [
    ("malformed json", CHAT_PATH, b'{"model": "m", "messages": [', 400, "invalid_request"),
    ("trailing garbage", CHAT_PATH, b'{"model":"m","messages":[{}]} x', 400, "invalid_request"),
    ("array", CHAT_PATH, b'[{"model":"m"}]', 400, "invalid_request"),
    ("string", CHAT_PATH, b'"hello"', 400, "invalid_request"),
    ("number", CHAT_PATH, b"42", 400, "invalid_request"),
    ("null", CHAT_PATH, b"null", 400, "invalid_request"),
    ("empty body", CHAT_PATH, b"", 400, "invalid_request"),
    ("model not a string", CHAT_PATH, b'{"model":1,"messages":[{}]}', 400, "invalid_request"),
    ("empty model", CHAT_PATH, b'{"model":"","messages":[{}]}', 400, "invalid_request"),
    ("missing model", CHAT_PATH, b'{"messages":[{}]}', 400, "invalid_request"),
    ("missing messages", CHAT_PATH, b'{"model":"m"}', 400, "invalid_request"),
    ("messages not a list", CHAT_PATH, b'{"model":"m","messages":"hi"}', 400, "invalid_request"),
    ("empty messages", CHAT_PATH, b'{"model":"m","messages":[]}', 400, "invalid_request"),
    (
        "stream not a bool",
        CHAT_PATH,
        b'{"model":"m","messages":[{}],"stream":"yes"}',
        400,
        "invalid_request",
    ),
    ("prompt wrong type", "/v1/completions", b'{"model":"m","prompt":{}}', 400, "invalid_request"),
    ("embedding without input", "/v1/embeddings", b'{"model":"m"}', 400, "invalid_request"),
    (
        "invalid utf-8",
        CHAT_PATH,
        b'{"model":"m","messages":[{"content":"\xff\xfe"}]}',
        400,
        "invalid_request",
    ),
    ("lone surrogate", CHAT_PATH, b'{"model":"\\ud800","messages":[{}]}', 400, "invalid_request"),
    ("utf-8 bom", CHAT_PATH, b'\xef\xbb\xbf{"model":"m","messages":[{}]}', 400, "invalid_request"),
    ("deeply nested", CHAT_PATH, NESTED, 400, "invalid_request"),
    ("unknown model", CHAT_PATH, b'{"model":"nope","messages":[{}]}', 404, "model_not_found"),
]


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path, max_body_bytes=64 * 1024) as rig:
        await rig.peer(script=serve_sse(40, gap=0.01))
        yield rig


async def _post(
    rig: Rig, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    async with rig.http.post(
        rig.url + path,
        data=body,
        headers={**rig.auth, "Content-Type": "application/json", **(headers or {})},
    ) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def test_bad_bodies_get_precise_4xx_while_another_stream_carries_on(rig: Rig) -> None:
    async def background_stream() -> list[str]:
        async with rig.http.post(
            rig.url + CHAT_PATH,
            json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
            headers=rig.auth,
        ) as resp:
            return await read_sse(resp)

    background = asyncio.create_task(background_stream())
    for name, path, body, status, code in BODIES:
        got_status, got = await _post(rig, path, body)
        assert got_status == status, name
        assert_openai_error(got, code)
    lines = await background
    assert lines[-1] == "data: [DONE]"
    assert len([line for line in lines if line.startswith("data: {")]) == 40


async def test_wrong_types_name_the_parameter(rig: Rig) -> None:
    status, body = await _post(rig, CHAT_PATH, b'{"model":"m","messages":[{}],"stream":"yes"}')
    assert status == 400
    assert isinstance(body, dict)
    assert body["error"]["param"] == "stream"
    status, body = await _post(rig, CHAT_PATH, b'{"messages":[{}]}')
    assert isinstance(body, dict)
    assert body["error"]["param"] == "model"


async def test_body_over_the_limit_is_413_with_or_without_content_length(rig: Rig) -> None:
    big = b'{"model":"m","messages":[{"content":"' + b"x" * 70_000 + b'"}]}'
    status, body = await _post(rig, CHAT_PATH, big)
    assert status == 413
    assert_openai_error(body, "request_too_large")

    async def chunked():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 10_000

    async with rig.http.post(rig.url + CHAT_PATH, data=chunked(), headers=rig.auth) as resp:
        assert resp.status == 413
        assert_openai_error(await resp.json(), "request_too_large")


async def test_broken_compressed_body_is_a_client_error(rig: Rig) -> None:
    status, body = await _post(rig, CHAT_PATH, b"definitely not gzip", {"Content-Encoding": "gzip"})
    assert 400 <= status < 500
    assert_openai_error(body)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/v1/nowhere", 404),
        ("POST", "/v1/models", 405),
        ("GET", CHAT_PATH, 405),
        ("DELETE", "/v1/embeddings", 405),
        ("GET", "/v1/" + "a" * 10_000, 404),
        ("GET", "/v1/../../etc/passwd", 404),
        ("PATCH", "/v1/models", 405),
    ],
)
async def test_unknown_paths_and_methods_are_openai_shaped(
    rig: Rig, method: str, path: str, status: int
) -> None:
    async with rig.http.request(method, rig.url + path, headers=rig.auth) as resp:
        assert resp.status == status
        assert_openai_error(await resp.json())
        if status == 405:
            assert resp.headers["Allow"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer " + "k" * 20_000},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer sk-\u00e9\u00e9"},
        {"api-key": "sk-" + "0" * 31 + "\u2028"},
        {"Authorization": ""},
    ],
)
async def test_odd_credentials_are_401(rig: Rig, headers: dict[str, str]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            rig.url + CHAT_PATH, json={"model": "m", "messages": [{}]}, headers=headers
        ) as resp,
    ):
        assert resp.status == 401
        assert_openai_error(await resp.json())


async def test_huge_unrelated_headers_do_not_break_a_request(rig: Rig) -> None:
    headers = {**rig.auth, "X-Junk": "j" * 20_000, "X-Request-ID": "r" * 5000}
    async with rig.http.post(
        rig.url + CHAT_PATH, json={"model": "m", "messages": [{}], "stream": True}, headers=headers
    ) as resp:
        assert resp.status == 200
        assert len(resp.headers["X-Request-ID"]) <= 128
        await resp.read()


async def test_headers_beyond_the_parser_limit_are_refused_with_a_4xx(rig: Rig) -> None:
    async with rig.http.get(rig.url + "/v1/models", headers={"X-Huge": "h" * 100_000}) as resp:
        assert 400 <= resp.status < 500


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Bin: \x00\x01\r\n\r\n",
        b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
    ],
)
async def test_malformed_http_is_refused_with_a_4xx_not_a_crash(rig: Rig, raw: bytes) -> None:
    reader, writer = await asyncio.open_connection(rig.bound.host, rig.bound.port)
    try:
        writer.write(raw)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    status = int(status_line.split()[1])
    assert 400 <= status < 500
    async with rig.http.get(rig.health_url + "/healthz") as resp:
        assert resp.status == 200
