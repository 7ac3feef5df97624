"""The real llama.cpp ``llama-server`` behind the relay (tiny random model, see llama/README.md).

The binary is built once by scripts/test-all.sh (about 7 minutes on 2 cores) and cached; a
start takes well under a second. With a ``seed``, llama.cpp answers the same request with the
same tokens, so a relayed answer is compared with the server's direct answer byte for byte,
apart from the fields that change per response (id, created, timings, cache counters).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from conftest import Relay, relay_to
from harness.node import run_cline
from harness.sse import RawResponse, post_raw
from harness.stack import BrokerHandle
from llama import LlamaServer, normalized, start_llama_server

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    with start_llama_server(parallel=4, ctx=4096) as server:
        yield server


@pytest.fixture
async def llama_relay(broker: BrokerHandle, llama_server: LlamaServer) -> AsyncIterator[Relay]:
    server = llama_server
    async with relay_to(broker, server.base_url, server.model, "llama-user") as relay:
        yield relay


def chat(model: str, *, stream: bool, n: int, seed: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"Tell me something, #{seed}."}],
        "max_tokens": n,
        "seed": seed,
        "ignore_eos": True,  # exactly n tokens
        "stream": stream,
        **extra,
    }


async def direct(server: LlamaServer, body: dict[str, Any]) -> bytes:
    return (await post_raw(f"{server.openai_base_url}/chat/completions", None, body)).body


async def test_the_context_length_comes_from_llama_cpp(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    async with llama_relay.async_client() as client:
        model = await client.models.retrieve(llama_server.model)
    assert (model.model_extra or {}).get("context_length") == 1024  # 4096 over 4 slots


async def test_a_plain_answer_matches_the_direct_one(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    body = chat(llama_server.model, stream=False, n=30, seed=11)
    relayed = await post_raw(f"{llama_relay.api_url}/chat/completions", llama_relay.key, body)
    assert relayed.status == 200
    assert normalized(relayed.body) == normalized(await direct(llama_server, body))
    assert relayed.json["usage"]["completion_tokens"] == 30


async def test_a_stream_matches_the_direct_one_byte_for_byte(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    options = {"stream_options": {"include_usage": True}}
    body = chat(llama_server.model, stream=True, n=120, seed=12, **options)
    relayed = await post_raw(f"{llama_relay.api_url}/chat/completions", llama_relay.key, body)
    assert relayed.status == 200
    assert normalized(relayed.body) == normalized(await direct(llama_server, body))
    events = relayed.data_events
    assert events[-1].data == "[DONE]"
    assert events[-2].json["usage"]["completion_tokens"] == 120


async def test_the_sdks_read_llama_cpp_through_the_relay(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    body = chat(llama_server.model, stream=True, n=40, seed=13)
    extra = {"ignore_eos": body.pop("ignore_eos")}
    async with llama_relay.async_client() as client:
        stream = await client.chat.completions.create(**body, extra_body=extra)
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    expected = [
        e.json["choices"][0]["delta"].get("content") or ""
        for e in RawResponse(200, {}, await direct(llama_server, {**body, **extra})).data_events
        if e.data != "[DONE]" and e.json["choices"]
    ]
    assert pieces == expected
    assert len([p for p in pieces if p]) >= 35

    def plain() -> str | None:
        with llama_relay.sync_client() as sync:
            return (
                sync.completions.create(
                    model=llama_server.model, prompt="Once", max_tokens=8, seed=3
                )
                .choices[0]
                .text
            )

    assert await asyncio.to_thread(plain)


async def test_concurrent_streams_beyond_the_slots_all_complete(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    """Eight streams on four slots: half of them wait for a slot inside llama.cpp.

    (Batched slots may sample other tokens than a lone request, so here the shape is checked:
    every stream whole, each of its 60 tokens in its own event.)
    """
    options = {"stream_options": {"include_usage": True}}
    bodies = [
        chat(llama_server.model, stream=True, n=60, seed=100 + i, **options) for i in range(8)
    ]
    url = f"{llama_relay.api_url}/chat/completions"
    relayed = await asyncio.gather(*(post_raw(url, llama_relay.key, b) for b in bodies))
    for response in relayed:
        events = response.data_events
        assert events[-1].data == "[DONE]"
        chunks = [e.json for e in events[:-1]]
        assert chunks[-1]["usage"]["completion_tokens"] == 60
        assert len({c["id"] for c in chunks}) == 1, "events of different streams got mixed"
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"


async def _busy_slots(session: aiohttp.ClientSession, server: LlamaServer) -> int:
    async with session.get(f"{server.base_url}/slots") as response:
        return sum(1 for slot in await response.json() if slot.get("is_processing"))


async def test_a_client_disconnect_frees_the_llama_slot_within_500_ms(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    body = chat(llama_server.model, stream=True, n=900, seed=14)
    url = f"{llama_relay.api_url}/chat/completions"
    headers = {"Authorization": f"Bearer {llama_relay.key}"}
    async with aiohttp.ClientSession() as client, aiohttp.ClientSession() as probe:
        response = await client.post(url, json=body, headers=headers)
        seen = b""
        while seen.count(b"data:") < 5:
            seen += await response.content.readany()
        assert await _busy_slots(probe, llama_server) == 1
        hung_up = time.monotonic()
        response.close()
        while await _busy_slots(probe, llama_server):
            assert time.monotonic() - hung_up < 5, "llama-server kept generating"
            await asyncio.sleep(0.01)
        freed_after = time.monotonic() - hung_up
    assert freed_after < 0.5


async def test_an_upstream_refusal_keeps_llama_cpps_message(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    too_long = " ".join(f"w{i}" for i in range(3000))
    body = {"model": llama_server.model, "messages": [{"role": "user", "content": too_long}]}
    relayed = await post_raw(f"{llama_relay.api_url}/chat/completions", llama_relay.key, body)
    original = json.loads(await direct(llama_server, body))
    assert relayed.status == 400
    assert relayed.json["error"]["message"] == original["error"]["message"]


@pytest.mark.node
async def test_a_cline_request_from_node_reaches_llama_cpp(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    report = await run_cline(
        {
            "baseURL": llama_relay.api_url,
            "apiKey": llama_relay.key,
            "model": llama_server.model,
            "systemPromptBytes": 600,  # a slot holds 1,024 tokens of this tokenizer
            "maxTokens": 30,
        }
    )
    assert report["ok"], report["error"]
    assert report["content"]
    assert report["usage"]["completion_tokens"] <= 30
    assert report["finishReason"] in {"stop", "length"}
