"""A slow relay link is not a dead one (issue 15 §3): on a link throttled to 4 KB/s the answer
backlog queues ahead of the connector's pings, yet the link stays up because the broker keeps
acknowledging bytes; a blackholed link (no pong, nothing acknowledged) is still found dead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import DEMO_MODEL, Relay, wait_models
from harness.sse import post_raw
from harness.stack import BrokerHandle, inprocess_connector
from harness.tcpproxy import TcpProxy, tcp_proxy
from harness.waits import wait_for
from remotellm_broker.state import BROKER
from remotellm_connector.demo_llm import DemoLLMServer, expected_text


def chat(text: str, n: int, **extra: Any) -> dict[str, Any]:
    body = {"model": DEMO_MODEL, "messages": [{"role": "user", "content": text}]}
    return {**body, "max_tokens": n, "stream": True, **extra}


@pytest.fixture
async def proxied(
    broker: BrokerHandle, demo_llm: DemoLLMServer
) -> AsyncIterator[tuple[Relay, TcpProxy]]:
    """Connector -> TCP proxy -> broker, with pings every 1 s and a 2 s pong timeout."""
    key = broker.add_user("alice")
    async with (
        tcp_proxy("127.0.0.1", broker.bound.port) as proxy,
        inprocess_connector(proxy.url(), broker.connector_token(), demo_llm.url) as connector,
    ):
        relay = Relay(broker, connector, key, demo_llm.url)
        await wait_models(relay, {DEMO_MODEL})
        yield relay, proxy


@pytest.mark.slow
async def test_a_link_throttled_to_4_kb_per_s_carries_a_long_answer_without_being_cut(
    proxied: tuple[Relay, TcpProxy],
) -> None:
    relay, proxy = proxied
    proxy.throttle_bps = 4096
    body = chat("a long answer over a thin uplink", 250)
    started = time.monotonic()
    response = await post_raw(f"{relay.api_url}/chat/completions", relay.key, body)
    took = time.monotonic() - started
    assert response.status == 200
    text = "".join(
        choice.get("delta", {}).get("content") or ""
        for event in response.data_events
        if event.event is None and event.data != "[DONE]"
        for choice in event.json.get("choices", [])
    )
    assert text == expected_text(body, 250)
    assert response.data_events[-1].data == "[DONE]"
    assert len(response.body) > 8 * 4096  # the backlog far outlasted the 2 s pong timeout
    assert took > 8.0
    assert proxy.accepted == 1  # never cut, never reconnected


async def test_a_blackholed_link_is_found_dead_within_the_ping_limits(
    proxied: tuple[Relay, TcpProxy],
) -> None:
    relay, proxy = proxied
    proxy.blackhole = True
    cut_at = time.monotonic()
    await wait_for(lambda: not relay.connector.relay_up, 10, what="the link to be found dead")
    # ping interval 1 s + pong timeout 2 s + close timeout 2 s, plus a tick of slack
    assert time.monotonic() - cut_at < 6.5
    proxy.blackhole = False
    await relay.connector.wait_connected(within=10)


@pytest.mark.slow
async def test_a_request_during_a_blackhole_waits_and_is_served_when_the_link_returns(
    proxied: tuple[Relay, TcpProxy],
) -> None:
    """A blip is not "model does not exist": the broker drops the silent connector, keeps
    its model known, and the request waits for the connector instead of getting 404."""
    relay, proxy = proxied
    state = relay.broker.bound.app[BROKER]
    proxy.blackhole = True
    await wait_for(lambda: len(state.registry) == 0, 30, what="the broker to drop the link")
    body = {"model": DEMO_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    request = asyncio.create_task(post_raw(f"{relay.api_url}/chat/completions", relay.key, body))
    await asyncio.sleep(0.5)
    assert not request.done()  # not a 404: it waits for the connector to come back
    proxy.blackhole = False
    response = await asyncio.wait_for(request, 15)
    assert response.status == 200, response.body
