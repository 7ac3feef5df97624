"""The demo LLM behaves like an OpenAI-compatible server, byte for byte where clients care."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from remotellm_connector.demo_llm import (
    DEMO_STATS,
    DemoLLMConfig,
    DemoLLMServer,
    demo_llm_command,
    embedding_vector,
    expected_text,
    expected_tokens,
    expected_tool_arguments,
    make_app,
    serve_demo_llm,
    stream_tag,
)

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
async def llm() -> AsyncIterator[DemoLLMServer]:
    async with serve_demo_llm(DemoLLMConfig(tokens=4, models=("demo", "other"))) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(llm: DemoLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=llm.base_url, api_key="unused", max_retries=0) as c:
        yield c


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "demo", "messages": MESSAGES, **extra}


async def sse_payloads(response: aiohttp.ClientResponse) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking every event ends with a blank line."""
    raw = (await response.read()).decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: ") for e in events[:-1])
    return [e.removeprefix("data: ") for e in events[:-1]]


async def test_models_list_reports_owner_and_context_length(
    llm: DemoLLMServer, client: openai.AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    models = [m async for m in client.models.list()]
    assert [(m.id, m.owned_by) for m in models] == [
        ("demo", "remotellm-demo"),
        ("other", "remotellm-demo"),
    ]
    async with http.get(f"{llm.base_url}/models/other") as response:
        assert (await response.json())["max_model_len"] == 8192
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("missing")
    assert caught.value.code == "model_not_found"


async def test_streaming_chat_sends_role_then_every_token_in_order_then_done(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    body = chat(stream=True, seed=42)
    async with http.post(f"{llm.base_url}/chat/completions", json=body) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        payloads = await sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    tokens = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert tokens == expected_tokens(body, 4) == [f"tok{k}-s42 " for k in range(4)]
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


async def test_usage_chunk_comes_last_only_when_asked(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        stream=True,
        max_tokens=3,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks[:-1])


async def test_non_streaming_chat_carries_the_whole_text_and_usage(
    client: openai.AsyncOpenAI,
) -> None:
    reply = await client.chat.completions.create(model="demo", messages=MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == expected_text(chat(), 4)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4


async def test_completions_stream_and_not_with_the_same_tokens(client: openai.AsyncOpenAI) -> None:
    body = {"model": "demo", "prompt": "Once upon", "max_tokens": 2}
    whole = await client.completions.create(model="demo", prompt="Once upon", max_tokens=2)
    stream = await client.completions.create(
        model="demo", prompt="Once upon", max_tokens=2, stream=True
    )
    chunks = [c async for c in stream]
    assert whole.choices[0].text == expected_text(body, 2)
    assert [c.choices[0].text for c in chunks] == [*expected_tokens(body, 2), ""]
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_embeddings_are_deterministic_unit_vectors(client: openai.AsyncOpenAI) -> None:
    # The SDK asks for base64 by default, so this also checks the float32 packing.
    result = await client.embeddings.create(model="demo", input=["a", "b"])
    floats = await client.embeddings.create(model="demo", input="a", encoding_format="float")
    assert result.data[0].embedding == pytest.approx(embedding_vector("a", 16), abs=1e-6)
    assert floats.data[0].embedding == pytest.approx(embedding_vector("a", 16))
    assert result.data[1].embedding != result.data[0].embedding
    assert sum(v * v for v in floats.data[0].embedding) == pytest.approx(1.0)


async def test_tools_stream_one_call_with_arguments_split_over_chunks(
    client: openai.AsyncOpenAI,
) -> None:
    tools: list[Any] = [
        {"type": "function", "function": {"name": "first", "parameters": {}}},
        {"type": "function", "function": {"name": "second", "parameters": {}}},
    ]
    choice: Any = {"type": "function", "function": {"name": "second"}}
    stream = await client.chat.completions.create(
        model="demo", messages=MESSAGES, tools=tools, tool_choice=choice, stream=True, seed=3
    )
    calls = [
        d
        for c in [c async for c in stream]
        if c.choices
        for d in c.choices[0].delta.tool_calls or []
    ]
    assert calls[0].id == "call_s3"
    assert calls[0].function is not None
    assert calls[0].function.name == "second"
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    assert arguments == expected_tool_arguments({"seed": 3}, 4)
    assert json.loads(arguments) == {"text": "tok0-s3 tok1-s3 tok2-s3 tok3-s3 "}
    assert len(calls) == 7


async def test_refusals_use_the_openai_error_shape(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    url = f"{llm.base_url}/chat/completions"
    cases: list[tuple[bytes, int, str | None]] = [
        (b"{not json", 400, None),
        (json.dumps(chat(model="nope")).encode(), 404, "model_not_found"),
        (json.dumps({"messages": MESSAGES}).encode(), 400, None),
        (json.dumps(chat(stream_options={"include_usage": True})).encode(), 400, None),
        (json.dumps(chat(x_status=503)).encode(), 503, None),
    ]
    for raw, status, code in cases:
        async with http.post(url, data=raw) as response:
            error = (await response.json())["error"]
            assert (response.status, error["code"]) == (status, code)
            assert set(error) == {"message", "type", "param", "code"}
    async with http.post(url, json=chat(x_status=429, x_retry_after=7)) as response:
        assert (response.status, response.headers["Retry-After"]) == (429, "7")
    async with http.get(f"{llm.url}/nowhere") as response:
        assert response.status == 404
        assert "error" in await response.json()


async def test_api_key_is_required_when_configured(http: aiohttp.ClientSession) -> None:
    async with serve_demo_llm(DemoLLMConfig(api_key="sk-right")) as llm:
        url = f"{llm.base_url}/models"
        for headers, status in [
            ({}, 401),
            ({"Authorization": "Bearer sk-wrong"}, 401),
            ({"Authorization": "Bearer sk-right"}, 200),
            ({"api-key": "sk-right"}, 200),
        ]:
            async with http.get(url, headers=headers) as response:
                assert response.status == status
        async with http.get(f"{llm.url}/health") as response:
            assert response.status == 200


async def test_fail_after_cuts_the_stream_without_done(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    received: list[bytes] = []

    async def read_lines(response: aiohttp.ClientResponse) -> None:
        async for line in response.content:
            received.append(line)

    url = f"{llm.base_url}/chat/completions"
    async with http.post(url, json=chat(stream=True, x_fail_after=2)) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_lines(response)
    assert b"".join(received).count(b'"content":"tok') == 2
    assert b"[DONE]" not in b"".join(received)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(url, json=chat(x_fail_after=0)) as response:
            await response.read()
    assert (llm.stats.streams_failed, llm.stats.streams_completed) == (1, 0)


async def test_a_client_leaving_mid_stream_is_recorded(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    url = f"{llm.base_url}/chat/completions"
    body = chat(stream=True, seed=9, max_tokens=1000, x_gap_ms=5)
    async with http.post(url, json=body, headers={"X-Request-ID": "req-1"}) as response:
        assert response.headers["X-Request-ID"] == "req-1"
        await response.content.readuntil(b'"content":"tok1-')
    async with asyncio.timeout(2):
        await llm.stats.wait_until(lambda s: len(s.disconnects) == 1 and s.live_streams == 0)
    gone = llm.stats.disconnects[0]
    assert (gone.request_id, gone.seed, gone.path) == ("req-1", 9, "/v1/chat/completions")
    assert 2 <= gone.tokens_sent < 1000
    assert llm.stats.streams_completed == 0


async def test_a_client_leaving_during_a_slow_prefill_is_noticed_without_cancellation(
    http: aiohttp.ClientSession,
) -> None:
    # A bare AppRunner does not cancel handlers on disconnect: the server must still notice.
    app = make_app(DemoLLMConfig())
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
        slow = chat(x_ttft_ms=60_000, seed=1)
        async with http.post(url, json={**slow, "stream": True}) as response:
            assert response.status == 200  # headers come before the first token
        with pytest.raises(TimeoutError):
            await http.post(url, json=slow, timeout=aiohttp.ClientTimeout(total=0.05))
        async with asyncio.timeout(2):
            await app[DEMO_STATS].wait_until(lambda s: len(s.disconnects) == 2)
        assert [d.tokens_sent for d in app[DEMO_STATS].disconnects] == [0, 0]
    finally:
        await runner.cleanup()


async def test_stall_keeps_the_stream_open_and_silent_until_the_client_leaves(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    url = f"{llm.base_url}/chat/completions"
    streams = [await http.post(url, json=chat(stream=True, x_stall_after=1)) for _ in range(3)]
    for response in streams:
        await response.content.readuntil(b'"content":"tok0-')
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await response.content.readuntil(b"\n\ndata: ")
    assert llm.stats.live_streams == llm.stats.peak_streams == 3
    for response in streams:
        response.close()
    async with asyncio.timeout(2):
        await llm.stats.wait_until(lambda s: len(s.disconnects) == 3)
    assert [d.tokens_sent for d in llm.stats.disconnects] == [1, 1, 1]


async def test_cadence_is_at_least_ttft_plus_the_gaps(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    body = chat(stream=True, max_tokens=3, x_ttft_ms=30, x_gap_ms=50)
    started = time.monotonic()
    async with http.post(f"{llm.base_url}/chat/completions", json=body) as response:
        await response.content.readuntil(b"tok0-")
        first = time.monotonic() - started
        await response.read()
    assert first >= 0.03
    assert time.monotonic() - started >= 0.13
    started = time.monotonic()
    async with http.post(
        f"{llm.base_url}/completions", json={**body, "prompt": "x", "stream": False}
    ) as response:
        await response.read()
    assert time.monotonic() - started >= 0.13


async def test_content_is_deterministic_per_seed_or_prompt(client: openai.AsyncOpenAI) -> None:
    async def text(seed: int | None = None) -> str | None:
        reply = await client.chat.completions.create(model="demo", messages=MESSAGES, seed=seed)
        return reply.choices[0].message.content

    assert await text() == await text() == expected_text(chat(), 4)
    assert await text(seed=1) != await text(seed=2)
    assert stream_tag(json.dumps(chat(seed=5)).encode()) == "s5"
    assert stream_tag(chat()) != stream_tag({"messages": [{"role": "user", "content": "other"}]})


async def test_response_bytes_sizes_the_body_exactly_and_big_prompts_fit(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    url = f"{llm.base_url}/chat/completions"
    for size in (100_000, 3_000_000):
        async with http.post(url, json=chat(x_response_bytes=size)) as response:
            assert len(await response.read()) == size
    big = json.dumps(chat(messages=[{"role": "user", "content": "x" * 3_000_000}])).encode()
    async with http.post(url, data=io.BytesIO(big)) as response:
        assert response.status == 200


async def test_stats_count_requests_per_route_and_reset(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    for path in ("/v1/models", "/v1/models/demo", "/v1/models/other"):
        async with http.get(llm.url + path):
            pass
    async with http.get(f"{llm.url}/_demo/stats") as response:
        seen = (await response.json())["requests"]
    assert seen == {"/v1/models": 1, "/v1/models/{model}": 2, "/_demo/stats": 1}
    async with http.post(f"{llm.url}/_demo/stats/reset") as response:
        assert (await response.json())["requests"] == {}


def test_cli_command_has_the_agreed_options() -> None:
    command = demo_llm_command()
    defaults = {p.name: p.default for p in command.params}
    assert command.name == "demo-llm"
    assert (defaults["host"], defaults["port"]) == ("127.0.0.1", 8001)
    assert {"tokens", "ttft_ms", "gap_ms", "models", "api_key"} <= set(defaults)


def test_module_entry_serves_and_stops_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "remotellm_connector.demo_llm", "--port", "0", "--model", "m1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while line and "listening on" not in line:
            line = proc.stdout.readline()
        assert "(models: m1)" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
