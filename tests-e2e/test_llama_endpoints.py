"""The real ``llama-server`` behind the real connector and broker, for the APIs beyond chat
completions: the connector's probes find that it answers the Responses and Messages APIs, the
broker lists and routes them, the real SDKs stream through, and usage is counted per user.

(Byte-for-byte comparisons with direct calls are in the clients suite.)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import anthropic
import pytest

from conftest import Relay, relay_to
from harness.stack import BrokerHandle
from llama import LlamaServer, start_llama_server

pytestmark = pytest.mark.llama

ALL = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    with start_llama_server(parallel=2, ctx=2048) as server:
        yield server


@pytest.fixture
async def llama_relay(broker: BrokerHandle, llama_server: LlamaServer) -> AsyncIterator[Relay]:
    server = llama_server
    async with relay_to(broker, server.base_url, server.model, "surfaces-user") as relay:
        yield relay


async def user_tokens(relay: Relay) -> float:
    async with relay.async_client() as client:
        http = client._client  # the SDK's own httpx client, to read the broker's metrics
        text = (await http.get(relay.broker.health_url + "/metrics")).text
    pattern = r'remotellm_broker_user_tokens_total\{user="local:surfaces-user"\} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


async def test_the_probes_find_both_apis_on_llama_server(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    async with llama_relay.async_client() as client:
        model = await client.models.retrieve(llama_server.model)
    assert (model.model_extra or {})["endpoints"] == ALL


async def test_the_anthropic_sdk_streams_from_llama_server_and_usage_is_counted(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    sdk = anthropic.AsyncAnthropic(base_url=llama_relay.broker.url, api_key=llama_relay.key)
    async with sdk.messages.stream(
        model=llama_server.model,
        max_tokens=8,
        messages=[{"role": "user", "content": "Say something."}],
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    counted = await sdk.messages.count_tokens(
        model=llama_server.model, messages=[{"role": "user", "content": "Say something."}]
    )
    await sdk.close()
    assert pieces
    assert final.usage.output_tokens > 0
    assert counted.input_tokens > 0
    assert await user_tokens(llama_relay) >= final.usage.output_tokens + 1


async def test_the_openai_sdk_streams_a_response_from_llama_server(
    llama_relay: Relay, llama_server: LlamaServer
) -> None:
    before = await user_tokens(llama_relay)
    async with llama_relay.async_client() as client:
        stream = await client.responses.create(
            model=llama_server.model, input="Say something.", max_output_tokens=8, stream=True
        )
        events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    usage = events[-1].response.usage  # type: ignore[union-attr]
    assert usage is not None
    assert await user_tokens(llama_relay) - before == usage.input_tokens + usage.output_tokens
