"""The SDKs people use, through broker + connector: the anthropic SDK on /v1/messages, the
openai SDK's ``client.responses`` in Python and Node, and the openai-agents SDK's default model
(the Responses API). Each one streams an answer the demo LLM's tokens make exact, and meets a
wrong key, a 429 and a connector killed mid-stream as its own typed error.

Marked ``clients``: ``hatch run test:fast`` leaves it out, ``hatch run test:all`` runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from agents import Agent, ModelSettings, Runner, set_default_openai_client, set_tracing_disabled

from conftest import DEMO_MODEL, Relay
from harness.clientkit import SLOW, WRONG_KEY, demo_reply, kill_connector_mid_stream, limited_relay
from harness.node import RESPONSES_SCRIPT, run_node_script
from remotellm_connector.demo_llm import DemoLLMServer, expected_text, expected_tokens

pytestmark = pytest.mark.clients

TOKENS = 8  # the demo_llm fixture's answer length
WRITE_TOOL: Any = {
    "name": "write_file",
    "description": "Write a file.",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Relay]:
    (tmp_path / "limited").mkdir()
    async with limited_relay(tmp_path / "limited") as relay:
        yield relay


def claude(relay: Relay, key: str | None = None) -> anthropic.AsyncAnthropic:
    """The anthropic SDK as a user points it at the broker: base URL without /v1, x-api-key."""
    return anthropic.AsyncAnthropic(
        base_url=relay.broker.url, api_key=key or relay.key, max_retries=0, timeout=30.0
    )


def wrong_key_client(relay: Relay) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=relay.api_url, api_key=WRONG_KEY, max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# -- anthropic ------------------------------------------------------------------------------


async def test_the_anthropic_sdk_streams_a_message(relay: Relay) -> None:
    messages = user("Say hello")
    async with (
        claude(relay) as client,
        client.messages.stream(model=DEMO_MODEL, max_tokens=64, messages=messages) as stream,
    ):
        deltas = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert deltas == expected_tokens({"messages": messages}, TOKENS)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == TOKENS
    assert final.usage.input_tokens > 0


async def test_the_anthropic_sdk_streams_a_scripted_tool_use(relay: Relay) -> None:
    prompt = "Write it " + demo_reply(
        text="Writing.", tool_calls=[{"name": "write_file", "arguments": {"path": "a.txt"}}]
    )
    async with (
        claude(relay) as client,
        client.messages.stream(
            model=DEMO_MODEL, max_tokens=64, messages=user(prompt), tools=[WRITE_TOOL]
        ) as stream,
    ):
        final = await stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    tool_use = final.content[1]
    assert isinstance(tool_use, anthropic.types.ToolUseBlock)
    assert (tool_use.name, tool_use.input) == ("write_file", {"path": "a.txt"})
    assert final.stop_reason == "tool_use"


async def test_the_anthropic_sdk_counts_tokens(relay: Relay) -> None:
    async with claude(relay) as client:
        counted = await client.messages.count_tokens(model=DEMO_MODEL, messages=user("count"))
        message = await client.messages.create(
            model=DEMO_MODEL, max_tokens=8, messages=user("count")
        )
    assert counted.input_tokens == message.usage.input_tokens > 0


async def test_the_anthropic_sdk_raises_its_own_errors(relay: Relay, limited: Relay) -> None:
    async with claude(relay, WRONG_KEY) as client:
        with pytest.raises(anthropic.AuthenticationError) as wrong:
            await client.messages.create(model=DEMO_MODEL, max_tokens=8, messages=user("hi"))
    assert wrong.value.status_code == 401
    async with claude(limited) as client:
        with pytest.raises(anthropic.RateLimitError) as limited_error:
            await client.messages.create(model=DEMO_MODEL, max_tokens=8, messages=user("hi"))
    assert int(limited_error.value.response.headers["retry-after"]) >= 1


async def test_the_anthropic_sdk_raises_when_the_connector_dies_mid_stream(
    relay: Relay, demo_llm: DemoLLMServer
) -> None:
    received: list[str] = []

    async def read() -> None:
        async with client.messages.stream(
            model=DEMO_MODEL, max_tokens=1000, messages=user("long"), extra_body=SLOW
        ) as stream:
            async for text in stream.text_stream:
                received.append(text)
                if len(received) == 3:
                    await relay.connector.kill()

    async with claude(relay) as client:
        with pytest.raises(anthropic.APIError):
            await read()
    assert 3 <= len(received) < 400, "the stream must end early, in error"


# -- openai: client.responses --------------------------------------------------------------


async def test_the_openai_sdk_streams_a_response(relay: Relay) -> None:
    async with relay.async_client() as client:
        stream = await client.responses.create(model=DEMO_MODEL, input="Say hello", stream=True)
        events = [event async for event in stream]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == expected_tokens({"input": "Say hello"}, TOKENS)
    assert events[0].type == "response.created"
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == expected_text({"input": "Say hello"}, TOKENS)
    assert final.response.usage is not None
    assert final.response.usage.output_tokens == TOKENS


async def test_the_openai_sdk_raises_its_own_errors_on_responses(
    relay: Relay, limited: Relay
) -> None:
    async with wrong_key_client(relay) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.responses.create(model=DEMO_MODEL, input="hi")
    async with limited.async_client() as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.responses.create(model=DEMO_MODEL, input="hi", stream=True)
    assert int(caught.value.response.headers["retry-after"]) >= 1


async def test_the_openai_sdk_raises_when_the_connector_dies_mid_response(relay: Relay) -> None:
    seen: list[str] = []

    async def read() -> None:
        stream = await client.responses.create(
            model=DEMO_MODEL, input="long", stream=True, extra_body=SLOW
        )
        async for event in stream:
            seen.append(event.type)
            if seen.count("response.output_text.delta") == 3:
                await relay.connector.kill()

    async with relay.async_client() as client:
        with pytest.raises(openai.APIError):
            await read()
    assert seen.count("response.output_text.delta") >= 3
    assert "response.completed" not in seen


# -- openai-agents: the default model is the Responses API ----------------------------------


async def test_the_agents_sdk_default_model_answers(relay: Relay, demo_llm: DemoLLMServer) -> None:
    before = demo_llm.stats.requests["/v1/responses"]  # the connector probes it too
    async with relay.async_client() as client:
        result = await Runner.run(agents_agent(client), "Say hello")
    assert isinstance(result.final_output, str)
    assert result.final_output.startswith("tok0-")
    assert result.final_output.count("tok") == TOKENS
    assert demo_llm.stats.requests["/v1/responses"] == before + 1, "the default is Responses"


async def test_the_agents_sdk_raises_its_own_errors(relay: Relay, limited: Relay) -> None:
    async with wrong_key_client(relay) as client:
        with pytest.raises(openai.AuthenticationError):
            await Runner.run(agents_agent(client), "hi")
    async with limited.async_client() as client:
        with pytest.raises(openai.RateLimitError):
            await Runner.run(agents_agent(client), "hi")


async def test_the_agents_sdk_raises_when_the_connector_dies_mid_stream(relay: Relay) -> None:
    deltas: list[str] = []

    async def read() -> None:
        run = Runner.run_streamed(agents_agent(client, ModelSettings(extra_body=SLOW)), "long")
        async for event in run.stream_events():
            if event.type == "raw_response_event" and event.data.type.endswith("text.delta"):
                deltas.append(event.data.type)
                if len(deltas) == 3:
                    await relay.connector.kill()

    async with relay.async_client() as client:
        with pytest.raises(openai.APIError):
            await read()
    assert len(deltas) >= 3


def agents_agent(client: openai.AsyncOpenAI, settings: Any = None) -> Any:
    """An Agent on the SDK's default model class (OpenAIResponsesModel) and our client, with
    tracing off (it would upload to api.openai.com)."""
    set_tracing_disabled(True)
    set_default_openai_client(client, use_for_tracing=False)
    return Agent(
        name="helper",
        instructions="Answer briefly.",
        model=DEMO_MODEL,
        model_settings=settings or ModelSettings(),
    )


# -- the Node SDK ----------------------------------------------------------------------------


def node_options(relay: Relay, **extra: Any) -> dict[str, Any]:
    return {"baseURL": relay.api_url, "apiKey": relay.key, "model": DEMO_MODEL, **extra}


@pytest.mark.node
async def test_the_node_sdk_streams_a_response(relay: Relay) -> None:
    report = await run_node_script(RESPONSES_SCRIPT, node_options(relay, input="Say hello"))
    assert report["ok"], report["error"]
    assert report["deltas"] == expected_tokens({"input": "Say hello"}, TOKENS)
    assert report["events"][0] == "response.created"
    assert report["events"][-1] == "response.completed"
    assert report["response"]["status"] == "completed"
    assert report["response"]["usage"]["output_tokens"] == TOKENS


@pytest.mark.node
async def test_the_node_sdk_raises_its_own_errors_on_responses(
    relay: Relay, limited: Relay, demo_llm: DemoLLMServer
) -> None:
    wrong = await run_node_script(RESPONSES_SCRIPT, {**node_options(relay), "apiKey": WRONG_KEY})
    assert (wrong["error"]["name"], wrong["error"]["status"]) == ("AuthenticationError", 401)
    refused = await run_node_script(RESPONSES_SCRIPT, node_options(limited))
    assert (refused["error"]["name"], refused["error"]["status"]) == ("RateLimitError", 429)
    running = asyncio.create_task(
        run_node_script(RESPONSES_SCRIPT, node_options(relay, input="long", extra=SLOW))
    )
    await kill_connector_mid_stream(relay, demo_llm)
    cut = await running
    assert not cut["ok"]
    assert cut["error"]["name"] == "APIError"
    assert "response.output_text.delta" in cut["events"]
    assert "response.completed" not in cut["events"]
