"""The client to the local LLM: relays answers, types failures, falls back on stream_options."""

import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web

from remotellm_connector.demo_llm import DemoLLMConfig, DemoLLMServer, expected_text, serve_demo_llm
from remotellm_connector.errors import UpstreamInterrupted, UpstreamTimeout, UpstreamUnreachable
from remotellm_connector.forward import UpstreamRequest, UsageMode, plan_request
from remotellm_connector.upstream import Upstream
from remotellm_protocol import Open, Principal

CHAT: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def request(body: dict[str, Any], path: str = "/v1/chat/completions") -> UpstreamRequest:
    frame = Open(
        stream=1,
        correlation_id="c",
        method="POST",
        path=path,
        principal=Principal(user_id="u", key_id="k"),
        headers=[("content-type", "application/json")],
    )
    return plan_request(frame, msgspec.json.encode(body))


async def read_all(upstream: Upstream, req: UpstreamRequest) -> tuple[int, bytes, Any]:
    async with upstream.open(req) as resp:
        chunks = []
        while chunk := await resp.read():
            chunks.append(chunk)
        return resp.status, b"".join(chunks), resp


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def keyed_demo() -> AsyncIterator[DemoLLMServer]:
    async with serve_demo_llm(DemoLLMConfig(tokens=4, api_key="llm-key")) as server:
        yield server


async def test_streaming_response_arrives_chunk_by_chunk(demo: DemoLLMServer) -> None:
    async with Upstream(demo.url) as upstream:
        status, body, resp = await read_all(upstream, request({**CHAT, "stream": True}))
    assert status == 200
    assert body.endswith(b"data: [DONE]\n\n")
    assert resp.usage_mode is UsageMode.STRIP
    assert ("content-type", "text/event-stream; charset=utf-8") in resp.headers


async def test_the_llm_key_is_added_for_servers_that_want_one(keyed_demo: DemoLLMServer) -> None:
    async with Upstream(keyed_demo.url, api_key="llm-key") as upstream:
        status, _, _ = await read_all(upstream, request(CHAT))
    assert status == 200
    async with Upstream(keyed_demo.url) as upstream:
        status, body, _ = await read_all(upstream, request(CHAT))
    assert status == 401  # the LLM's own answer is relayed, body and all
    assert b"API key" in body


async def test_llm_errors_are_relayed_with_their_body(demo: DemoLLMServer) -> None:
    async with Upstream(demo.url) as upstream:
        status, body, _ = await read_all(upstream, request({**CHAT, "x_status": 503}))
    assert status == 503
    assert b'"error"' in body


async def test_refused_connection_is_upstream_unreachable() -> None:
    async with Upstream(f"http://127.0.0.1:{closed_port()}") as upstream:
        with pytest.raises(UpstreamUnreachable, match="cannot connect"):
            await read_all(upstream, request(CHAT))


async def test_no_llm_found_is_upstream_unreachable() -> None:
    async with Upstream(None) as upstream:
        with pytest.raises(UpstreamUnreachable, match="no LLM server"):
            await read_all(upstream, request(CHAT))


async def test_slow_prefill_beyond_the_read_timeout_is_upstream_timeout(
    demo: DemoLLMServer,
) -> None:
    async with Upstream(demo.url, read_timeout=0.2) as upstream:
        with pytest.raises(UpstreamTimeout):
            await read_all(upstream, request({**CHAT, "x_ttft_ms": 2000}))


async def test_silence_mid_stream_is_upstream_interrupted(demo: DemoLLMServer) -> None:
    async with Upstream(demo.url, read_timeout=0.2) as upstream:
        with pytest.raises(UpstreamInterrupted):
            await read_all(upstream, request({**CHAT, "stream": True, "x_stall_after": 2}))


async def test_connection_dropped_mid_stream_is_upstream_interrupted(demo: DemoLLMServer) -> None:
    async with Upstream(demo.url) as upstream:
        with pytest.raises(UpstreamInterrupted, match="broke off"):
            await read_all(upstream, request({**CHAT, "stream": True, "x_fail_after": 2}))


async def strict_llm(request: web.Request) -> web.StreamResponse:
    """An OpenAI-style server that knows no stream_options (older servers do this)."""
    body = await request.json()
    if "stream_options" in body:
        return web.json_response({"error": {"message": "extra field stream_options"}}, status=422)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Set-Cookie": "a=b", "X-Custom": "1"}
    )
    await response.prepare(request)
    await response.write(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n')
    await response.write(b"data: [DONE]\n\n")
    return response


@pytest.fixture
async def strict() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", strict_llm)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_server_rejecting_stream_options_gets_the_request_as_the_client_sent_it(
    strict: str,
) -> None:
    async with Upstream(strict) as upstream:
        status, body, resp = await read_all(upstream, request({**CHAT, "stream": True}))
        assert status == 200
        assert resp.usage_mode is UsageMode.SNIFF
        assert body.endswith(b"data: [DONE]\n\n")
        assert not upstream.stream_options_ok
        names = [k for k, _ in resp.headers]
        assert "set-cookie" not in names
        assert "x-custom" in names


async def test_a_large_request_body_is_sent_whole(demo: DemoLLMServer) -> None:
    prompt = "y" * (3 * 1024 * 1024)
    body = {**CHAT, "messages": [{"role": "user", "content": prompt}]}
    async with Upstream(demo.url) as upstream:
        status, answer, _ = await read_all(upstream, request(body))
    assert status == 200
    content = msgspec.json.decode(answer)["choices"][0]["message"]["content"]
    assert content == expected_text(body, 8)
