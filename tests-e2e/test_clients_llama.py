"""The Responses and Messages APIs of the real ``llama-server`` through the relay are the
server's own bytes: each answer, plain and streamed, equals a direct call to the server apart
from what changes per response (ids, timestamps, timings, cache counters). Greedy sampling
(``temperature: 0``) makes the tiny model answer the same request with the same tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from conftest import Relay, relay_to
from harness.sse import post_raw
from harness.stack import BrokerHandle
from llama import LlamaServer, normalized, start_llama_server

pytestmark = [pytest.mark.llama, pytest.mark.clients]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    with start_llama_server(parallel=2, ctx=2048) as server:
        yield server


@pytest.fixture
async def llama_relay(broker: BrokerHandle, llama_server: LlamaServer) -> AsyncIterator[Relay]:
    server = llama_server
    async with relay_to(broker, server.base_url, server.model, "bytes-user") as relay:
        yield relay


def responses_body(model: str, *, stream: bool, n: int) -> dict[str, Any]:
    return {
        "model": model,
        "input": f"Tell me something, #{n}.",
        "max_output_tokens": n,
        "temperature": 0,
        "stream": stream,
    }


def messages_body(model: str, *, stream: bool, n: int) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": n,
        "messages": [{"role": "user", "content": f"Tell me something, #{n}."}],
        "temperature": 0,
        "stream": stream,
    }


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("path", ["/responses", "/messages"])
async def test_llama_servers_answer_is_relayed_byte_for_byte(
    llama_relay: Relay, llama_server: LlamaServer, path: str, stream: bool
) -> None:
    make = responses_body if path == "/responses" else messages_body
    body = make(llama_server.model, stream=stream, n=24 + stream)
    relayed = await post_raw(llama_relay.api_url + path, llama_relay.key, body)
    direct = await post_raw(llama_server.openai_base_url + path, None, body)
    assert relayed.status == direct.status == 200, relayed.body[:500]
    assert normalized(relayed.body) == normalized(direct.body)
    if stream:
        last = b"event: response.completed" if path == "/responses" else b"event: message_stop"
        assert last in relayed.body
