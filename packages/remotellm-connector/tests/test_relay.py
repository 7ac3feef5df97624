"""End to end through real sockets: broker peer ⇄ connector ⇄ demo LLM."""

import asyncio
from typing import Any

import msgspec

from broker_peer import BrokerPeer, error_code
from conftest import StartConnector
from remotellm_connector.demo_llm import DemoLLMServer, expected_text
from remotellm_protocol import ErrorCode

CHAT: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def sse_text(payloads: list[str]) -> str:
    text = ""
    for payload in payloads:
        if payload == "[DONE]":
            continue
        chunk = msgspec.json.decode(payload)
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
    return text


async def test_streaming_chat_is_relayed_with_usage_and_without_the_extra_chunk(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    assert conn.hello is not None
    assert [m.id for m in conn.hello.models] == ["demo"]
    assert conn.hello.models[0].context_length == 8192
    body = {**CHAT, "stream": True, "seed": 7}
    stream = await conn.open(body=body)
    end = await stream.wait_end()
    assert end.error is None
    assert stream.head is not None
    assert stream.head.status == 200
    payloads = stream.sse_payloads()
    assert payloads[-1] == "[DONE]"
    assert sse_text(payloads) == expected_text(body, 8)
    assert not any('"choices":[]' in p for p in payloads)
    assert end.usage is not None
    assert end.usage.completion_tokens == 8
    assert conn.errors == []


async def test_non_streaming_chat_is_relayed_with_usage(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    stream = await conn.open(body={**CHAT, "seed": 3})
    end = await stream.wait_end()
    assert end.error is None
    answer = msgspec.json.decode(stream.body)
    assert answer["choices"][0]["message"]["content"] == expected_text({**CHAT, "seed": 3}, 8)
    assert end.usage is not None
    assert end.usage.total_tokens == answer["usage"]["total_tokens"]


async def test_path_outside_the_allow_list_is_refused_as_bad_request(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    stream = await conn.open(path="/api/pull", body=b"{}")
    end = await stream.wait_end()
    assert stream.head is None
    assert error_code(end) == ErrorCode.BAD_REQUEST
    await asyncio.sleep(0)
    assert "/api/pull" not in demo.stats.requests


async def test_fifty_concurrent_streams_each_get_exactly_their_own_tokens(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector(max_streams=64)
    conn = await peer.next_connection()
    bodies = [
        {**CHAT, "stream": True, "seed": i, "max_tokens": 20, "x_ttft_ms": 300, "x_gap_ms": 2}
        for i in range(50)
    ]
    streams = [
        await conn.open(body=body, correlation_id=f"req-{i}") for i, body in enumerate(bodies)
    ]
    ends = await asyncio.gather(*(s.wait_end(within=30) for s in streams))
    assert all(end.error is None for end in ends)
    for body, stream in zip(bodies, streams, strict=True):
        assert sse_text(stream.sse_payloads()) == expected_text(body, 20)
    assert demo.stats.peak_streams == 50
    assert conn.errors == []


async def test_large_request_body_arrives_whole_through_body_frames(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    prompt = "x" * (700 * 1024)  # three body frames after the open
    body = {"model": "demo", "messages": [{"role": "user", "content": prompt}]}
    stream = await conn.open(body=body)
    end = await stream.wait_end()
    assert end.error is None
    answer = msgspec.json.decode(stream.body)
    # The demo LLM's tokens carry a hash of the prompt: equal text means an intact body.
    assert answer["choices"][0]["message"]["content"] == expected_text(body, 8)


async def test_client_that_asked_for_usage_keeps_its_usage_chunk(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    stream = await conn.open(body=body)
    end = await stream.wait_end()
    usage_chunks = [p for p in stream.sse_payloads() if '"choices":[]' in p]
    assert len(usage_chunks) == 1
    assert end.usage is not None
    assert msgspec.json.decode(usage_chunks[0])["usage"]["completion_tokens"] == 8
