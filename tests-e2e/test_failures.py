"""Every failure ends cleanly: an error the client can see, never a hang, never a silent cut.

A stream that breaks after it started must end with an SSE ``error`` event and without
``data: [DONE]``; the SDKs then raise instead of returning a truncated answer as complete.
The relay's own link is cut with a TCP reset (``harness.tcpproxy``), the LLM's faults come
from the demo LLM (``x_fail_after``, ``x_stall_after``, ``x_ttft_ms``), and what the LLM
itself saw is read from its stats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from conftest import DEMO_MODEL, Relay, wait_models
from harness.sse import RawResponse, post_raw
from harness.stack import BrokerHandle, inprocess_connector
from harness.tcpproxy import TcpProxy, tcp_proxy
from harness.waits import wait_for
from remotellm_connector.demo_llm import DemoLLMServer, expected_text, expected_tokens

CANCEL_BUDGET_S = 0.5


def chat(text: str, n: int, **extra: Any) -> dict[str, Any]:
    body = {"model": DEMO_MODEL, "messages": [{"role": "user", "content": text}]}
    return {**body, "max_tokens": n, "stream": True, **extra}


def sdk_args(body: dict[str, Any]) -> dict[str, Any]:
    """The SDK refuses unknown keywords: the demo LLM's x_* controls go in extra_body."""
    extra = {k: v for k, v in body.items() if k.startswith("x_")}
    return {**{k: v for k, v in body.items() if k not in extra}, "extra_body": extra}


def assert_clean_error_end(response: RawResponse) -> dict[str, Any]:
    """The stream ended with an error event and no [DONE]; returns the error object."""
    events = response.data_events
    assert events, "no events at all"
    assert all(e.data != "[DONE]" for e in events), "a broken stream must not end with [DONE]"
    last = events[-1]
    assert last.event == "error", f"last event is not an error: {last}"
    error: dict[str, Any] = last.json["error"]
    assert error["message"]
    return error


def content_of(response: RawResponse) -> str:
    text = []
    for event in response.data_events:
        if event.event is None and event.data != "[DONE]":
            for choice in event.json.get("choices", []):
                text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


@pytest.fixture
async def proxied(
    broker: BrokerHandle, demo_llm: DemoLLMServer
) -> AsyncIterator[tuple[Relay, TcpProxy]]:
    """The relay with a cuttable TCP proxy between connector and broker."""
    key = broker.add_user("alice")
    async with (
        tcp_proxy("127.0.0.1", broker.bound.port) as proxy,
        inprocess_connector(proxy.url(), broker.connector_token(), demo_llm.url) as connector,
    ):
        relay = Relay(broker, connector, key, demo_llm.url)
        await wait_models(relay, {DEMO_MODEL})
        yield relay, proxy


async def test_a_relay_dropped_mid_stream_ends_with_an_error_then_the_connector_is_back(
    proxied: tuple[Relay, TcpProxy], demo_llm: DemoLLMServer
) -> None:
    relay, proxy = proxied
    body = chat("long answer", 200, x_gap_ms=20)
    url = f"{relay.api_url}/chat/completions"
    headers = {"Authorization": f"Bearer {relay.key}"}
    received = b""
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as r,
    ):
        async for chunk in r.content.iter_any():
            received += chunk
            if received.count(b"tok") >= 5 and proxy.open_connections:
                assert proxy.cut() == 1
    assert time.monotonic() - started < 10, "the client waited far too long"
    response = RawResponse(r.status, dict(r.headers), received)
    error = assert_clean_error_end(response)
    assert error["code"] == "upstream_interrupted"
    assert expected_text(body, 200).startswith(content_of(response))
    # The connector stops the generation it can no longer deliver...
    await wait_for(lambda: demo_llm.stats.disconnects, 5, what="the LLM to see the abort")
    # ...reconnects on its own, and serves the next request.
    await relay.connector.wait_connected(within=10)
    await wait_models(relay, {DEMO_MODEL})
    async with relay.async_client() as client:
        follow_up = chat("after the drop", 4)
        stream = await client.chat.completions.create(**follow_up)
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert [p for p in pieces if p] == expected_tokens(follow_up, 4)
    assert proxy.accepted >= 2


async def test_a_relay_dropped_before_the_first_token_ends_cleanly_then_works_again(
    proxied: tuple[Relay, TcpProxy], demo_llm: DemoLLMServer
) -> None:
    """One connector, cut during the LLM's prefill: there is no other connector to retry on
    (with two, the request moves over: test_scale). The client must get a clean error (or,
    from a broker that waits for the reconnect, the full answer), never a hang or a stream
    that looks complete; after the reconnect the same request succeeds."""
    relay, proxy = proxied
    body = chat("slow thinker", 5, x_ttft_ms=800)
    url = f"{relay.api_url}/chat/completions"
    request = asyncio.create_task(post_raw(url, relay.key, body))
    await wait_for(lambda: demo_llm.stats.live_streams, 5, what="the LLM's prefill")
    assert proxy.cut() == 1
    response = await request
    if response.status != 200:  # refused before the stream started: a retryable status
        assert response.status == 503
        assert int(response.header("Retry-After") or 0) >= 1
    elif response.data_events[-1].data != "[DONE]":
        assert_clean_error_end(response)
        assert content_of(response) == ""
    else:
        assert content_of(response) == expected_text(body, 5)
    await relay.connector.wait_connected(within=10)
    await wait_models(relay, {DEMO_MODEL})
    again = await post_raw(url, relay.key, body)
    assert content_of(again) == expected_text(body, 5)


async def test_an_llm_dying_mid_stream_is_an_error_event_not_a_short_answer(
    relay: Relay,
) -> None:
    body = chat("die after three", 10, x_fail_after=3)
    response = await post_raw(f"{relay.api_url}/chat/completions", relay.key, body)
    assert response.status == 200
    assert_clean_error_end(response)
    assert content_of(response) == "".join(expected_tokens(body, 10)[:3])
    async with relay.async_client() as client:
        stream = await client.chat.completions.create(**sdk_args(body))
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_an_llm_dying_before_a_plain_answer_is_a_502(relay: Relay) -> None:
    async with relay.async_client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                **sdk_args(chat("die", 4, x_fail_after=0, stream=False))
            )
    assert caught.value.status_code == 502


async def test_a_stalled_llm_times_out_instead_of_hanging(
    broker: BrokerHandle, demo_llm: DemoLLMServer
) -> None:
    key = broker.add_user("dave")
    async with inprocess_connector(
        broker.relay_url, broker.connector_token(), demo_llm.url, llm_read_timeout_s=1.0
    ) as connector:
        relay = Relay(broker, connector, key, demo_llm.url)
        await wait_models(relay, {DEMO_MODEL})
        body = chat("stall after two", 10, x_stall_after=2)
        started = time.monotonic()
        response = await post_raw(f"{relay.api_url}/chat/completions", relay.key, body)
        assert time.monotonic() - started < 5
    error = assert_clean_error_end(response)
    assert error["code"] in {"upstream_timeout", "upstream_interrupted"}
    assert content_of(response) == "".join(expected_tokens(body, 10)[:2])


async def _disconnect_after(relay: Relay, body: dict[str, Any], tokens: int) -> float:
    """Read ``tokens`` tokens (0: only the response head), then hang up; when we hung up."""
    url = f"{relay.api_url}/chat/completions"
    headers = {"Authorization": f"Bearer {relay.key}"}
    async with aiohttp.ClientSession() as session:
        response = await session.post(url, json=body, headers=headers)
        assert response.status == 200
        seen = b""
        while seen.count(b"tok") < tokens:
            seen += await response.content.readany()
        hung_up = time.monotonic()
        response.close()
    return hung_up


async def test_a_client_disconnect_mid_stream_stops_the_llm_within_500_ms(
    relay: Relay, demo_llm: DemoLLMServer
) -> None:
    body = chat("a long one", 500, x_gap_ms=20)
    hung_up = await _disconnect_after(relay, body, tokens=5)
    await wait_for(lambda: demo_llm.stats.disconnects, 2, what="the LLM to see the disconnect")
    seen = demo_llm.stats.disconnects[0]
    assert seen.at - hung_up < CANCEL_BUDGET_S
    assert 5 <= seen.tokens_sent < 100
    assert demo_llm.stats.live_streams == 0


async def test_a_client_disconnect_during_prefill_stops_the_llm_within_500_ms(
    relay: Relay, demo_llm: DemoLLMServer
) -> None:
    body = chat("think long", 5, x_ttft_ms=10_000)
    hung_up = await _disconnect_after(relay, body, tokens=0)
    await asyncio.sleep(0.1)  # hang up well inside the prefill
    await wait_for(lambda: demo_llm.stats.disconnects, 2, what="the LLM to see the disconnect")
    seen = demo_llm.stats.disconnects[0]
    assert seen.at - hung_up < CANCEL_BUDGET_S
    assert seen.tokens_sent == 0


async def test_a_blocked_user_is_cut_off_mid_stream(relay: Relay, demo_llm: DemoLLMServer) -> None:
    body = chat("keep talking", 400, x_gap_ms=20)
    url = f"{relay.api_url}/chat/completions"
    headers = {"Authorization": f"Bearer {relay.key}"}
    received = b""
    blocked = False
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as r,
    ):
        async for chunk in r.content.iter_any():
            received += chunk
            if not blocked and received.count(b"tok") >= 5:
                relay.broker.store.block("alice")
                blocked = True
    assert time.monotonic() - started < 5, "the blocked user kept streaming"
    error = assert_clean_error_end(RawResponse(r.status, dict(r.headers), received))
    assert error["code"] == "user_blocked"
    await wait_for(lambda: demo_llm.stats.disconnects, 2, what="the LLM to stop generating")
    again = await post_raw(url, relay.key, chat("me again", 2))
    assert again.status == 403
    assert again.json["error"]["code"] == "user_blocked"
