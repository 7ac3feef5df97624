"""The everyday path through broker and connector with the official openai SDK, sync and async.

The upstream is the demo LLM, whose k-th token is a known function of the request, so "the
client got what the LLM produced" is checked token by token, not just "got something".
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import openai
import pytest

from conftest import DEMO_MODEL, Relay, wait_models
from harness.sse import post_raw
from harness.stack import BrokerHandle, inprocess_broker, inprocess_connector
from harness.waits import wait_for_async
from remotellm_connector.demo_llm import (
    DemoLLMConfig,
    embedding_vector,
    expected_text,
    expected_tokens,
    serve_demo_llm,
)
from remotellm_connector.demo_llm.content import prompt_bytes, prompt_token_count


def chat(text: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": DEMO_MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": n,
        **extra,
    }


async def test_chat_completion_with_the_async_sdk(async_client: openai.AsyncOpenAI) -> None:
    body = chat("Hello there", 6)
    answer = await async_client.chat.completions.create(**body)
    assert answer.choices[0].message.content == expected_text(body, 6)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 6


async def test_chat_completion_with_the_sync_sdk(sync_client: openai.OpenAI) -> None:
    body = chat("Hello from a thread", 5)
    # The broker and connector run in this event loop: the blocking client needs a thread.
    answer = await asyncio.to_thread(lambda: sync_client.chat.completions.create(**body))
    assert answer.choices[0].message.content == expected_text(body, 5)


async def test_streaming_with_the_async_sdk(async_client: openai.AsyncOpenAI) -> None:
    body = chat("Stream please", 12, stream=True)
    stream = await async_client.chat.completions.create(**body)
    pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert [p for p in pieces if p] == expected_tokens(body, 12)


async def test_streaming_with_the_sync_sdk(sync_client: openai.OpenAI) -> None:
    body = chat("Stream into a thread", 9, stream=True)

    def consume() -> list[str]:
        with sync_client.chat.completions.create(**body) as stream:
            return [c.choices[0].delta.content or "" for c in stream if c.choices]

    pieces = await asyncio.to_thread(consume)
    assert [p for p in pieces if p] == expected_tokens(body, 9)


async def test_legacy_completions_stream_and_not(async_client: openai.AsyncOpenAI) -> None:
    body = {"model": DEMO_MODEL, "prompt": "Once", "max_tokens": 4}
    answer = await async_client.completions.create(**body)
    assert answer.choices[0].text == expected_text(body, 4)
    stream = await async_client.completions.create(**body, stream=True)
    pieces = [c.choices[0].text async for c in stream if c.choices]
    assert "".join(pieces) == expected_text(body, 4)


async def test_embeddings_arrive_intact(async_client: openai.AsyncOpenAI) -> None:
    inputs = ["relay me", "and me"]
    # The SDK asks for base64 (little-endian float32) and decodes it, as most users do.
    result = await async_client.embeddings.create(model=DEMO_MODEL, input=inputs)
    for item, text in zip(result.data, inputs, strict=True):
        assert item.embedding == pytest.approx(embedding_vector(text, 16), abs=1e-6)


async def test_usage_is_reported_when_asked(async_client: openai.AsyncOpenAI) -> None:
    body = chat("Count my tokens", 7, stream=True, stream_options={"include_usage": True})
    stream = await async_client.chat.completions.create(**body)
    chunks = [c async for c in stream]
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    prompt = prompt_token_count(prompt_bytes(body))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        prompt,
        7,
        prompt + 7,
    )


async def test_usage_is_counted_but_not_sent_when_not_asked(relay: Relay) -> None:
    body = chat("No usage for me", 5, stream=True)
    response = await post_raw(f"{relay.api_url}/chat/completions", relay.key, body)
    datas = [e.data for e in response.data_events]
    assert datas[-1] == "[DONE]"
    assert not any('"choices":[]' in d for d in datas), "the usage-only chunk must be stripped"
    assert "".join(
        e.json["choices"][0]["delta"].get("content") or "" for e in response.data_events[:-1]
    ) == expected_text(body, 5)
    # ...yet the connector read the usage on its way and the broker counted it (the count
    # lands when the request's handler finishes, a moment after the client saw the end).
    async with aiohttp.ClientSession() as session:

        async def counted() -> bool:
            async with session.get(f"{relay.broker.health_url}/metrics") as metrics:
                text = await metrics.text()
            found = re.search(r'remotellm_broker_tokens_total\{kind="completion"\} (\S+)', text)
            return found is not None and float(found.group(1)) == 5

        await wait_for_async(counted, 2, what="the broker to count 5 completion tokens")


async def test_an_invalid_key_is_rejected(relay: Relay) -> None:
    async with openai.AsyncOpenAI(
        base_url=relay.api_url, api_key="sk-" + "0" * 32, max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(**chat("let me in", 2))
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    missing = await post_raw(f"{relay.api_url}/chat/completions", None, chat("no key", 2))
    assert missing.status == 401
    assert missing.json["error"]["type"] == "invalid_request_error"


async def test_an_azure_style_api_key_header_is_accepted(relay: Relay) -> None:
    body = chat("azure", 3)
    response = await post_raw(
        f"{relay.api_url}/chat/completions", None, body, headers={"api-key": relay.key}
    )
    assert response.status == 200
    assert response.json["choices"][0]["message"]["content"] == expected_text(body, 3)


async def test_an_unknown_model_is_a_404(async_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await async_client.chat.completions.create(**{**chat("x", 1), "model": "no-such-model"})
    assert caught.value.code == "model_not_found"


async def test_the_request_id_comes_back(relay: Relay) -> None:
    response = await post_raw(
        f"{relay.api_url}/chat/completions",
        relay.key,
        chat("trace me", 2),
        headers={"X-Request-ID": "req-e2e-12345"},
    )
    assert response.status == 200
    assert response.header("X-Request-ID") == "req-e2e-12345"


async def test_models_lists_what_the_connector_serves(relay: Relay) -> None:
    async with relay.async_client() as client:
        listed = [m async for m in client.models.list()]
        one = await client.models.retrieve(DEMO_MODEL)
    assert [m.id for m in listed] == [DEMO_MODEL]
    assert one.id == DEMO_MODEL


async def test_rate_limit_answers_429_with_retry_after(broker_factory: Any) -> None:
    async with broker_factory(rate_limit_rpm=6, rate_limit_burst=2) as relay:
        async with relay.async_client() as client:
            for _ in range(2):
                await client.chat.completions.create(**chat("ok", 1))
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(**chat("too many", 1))
        headers = caught.value.response.headers
        assert caught.value.status_code == 429
        assert int(headers["Retry-After"]) >= 1
        assert headers["x-ratelimit-limit-requests"] in {"2", "6"}  # burst or rpm: both fair
        assert headers["x-ratelimit-remaining-requests"] == "0"


async def test_a_down_llm_is_a_502(broker: BrokerHandle) -> None:
    key = broker.add_user("bob")
    token = broker.connector_token()
    async with AsyncExitStack() as outlives_the_llm:
        async with serve_demo_llm(DemoLLMConfig(models=(DEMO_MODEL,))) as llm:
            # A slow model refresh: the connector keeps announcing the model it last saw.
            connector = await outlives_the_llm.enter_async_context(
                inprocess_connector(broker.relay_url, token, llm.url, models_refresh_s=60.0)
            )
            relay = Relay(broker, connector, key, llm.url)
            await wait_models(relay, {DEMO_MODEL})
        # The LLM server is gone now; the connector is still up.
        async with relay.async_client() as client:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(**chat("anyone there?", 2))
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"


@pytest.fixture
def broker_factory(tmp_path: Any) -> Any:
    """A relay to the demo LLM with broker settings of the test's choosing."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def make(**overrides: Any) -> Any:
        async with (
            inprocess_broker(tmp_path, overrides=overrides) as broker,
            serve_demo_llm(DemoLLMConfig(models=(DEMO_MODEL,))) as llm,
        ):
            key = broker.add_user("carol")
            async with inprocess_connector(
                broker.relay_url, broker.connector_token(), llm.url
            ) as c:
                relay = Relay(broker, c, key, llm.url)
                await wait_models(relay, {DEMO_MODEL})
                yield relay

    return make
