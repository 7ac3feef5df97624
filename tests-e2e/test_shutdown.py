"""Graceful shutdown: requests in flight finish, new work is refused or goes elsewhere.

In-process here (``stop()`` does what the first SIGTERM does); ``test_processes`` sends the
real signals to the console scripts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from conftest import DEMO_MODEL, Relay, wait_models
from harness.clients import collect
from harness.sse import post_raw
from harness.stack import inprocess_broker, inprocess_connector
from harness.waits import wait_for
from remotellm_connector.demo_llm import DemoLLMServer, expected_tokens


def stream_body(seed: int, n: int, gap_ms: float) -> dict[str, Any]:
    return {
        "model": DEMO_MODEL,
        "messages": [{"role": "user", "content": "drain me"}],
        "max_tokens": n,
        "seed": seed,
        "stream": True,
        "extra_body": {"x_gap_ms": gap_ms},
    }


async def test_connector_shutdown_lets_streams_in_flight_finish(
    relay: Relay, demo_llm: DemoLLMServer
) -> None:
    bodies = [stream_body(seed, 20, gap_ms=40) for seed in range(5)]
    async with relay.async_client() as client:
        tasks = [asyncio.create_task(collect(client, b)) for b in bodies]
        await wait_for(lambda: demo_llm.stats.live_streams == 5, 5, what="5 streams running")
        exit_code = await relay.connector.stop(within=20)
        results = await asyncio.gather(*tasks)
    assert exit_code == 0
    for body, tokens in zip(bodies, results, strict=True):
        assert tokens == expected_tokens({"seed": body["seed"]}, 20)
    assert demo_llm.stats.disconnects == []
    await wait_models(relay, set())


async def test_a_draining_connector_takes_no_new_streams_but_another_one_does(
    relay: Relay, demo_llm: DemoLLMServer
) -> None:
    async with (
        inprocess_connector(
            relay.broker.relay_url,
            relay.broker.connector_token("spare"),
            demo_llm.url,
            name="spare",
        ),
        relay.async_client() as client,
    ):
        long_one = asyncio.create_task(collect(client, stream_body(1, 30, gap_ms=40)))
        await wait_for(lambda: demo_llm.stats.live_streams == 1, 5, what="the long stream")
        stopping = asyncio.create_task(relay.connector.stop(within=20))
        await asyncio.sleep(0.2)
        quick = await collect(client, stream_body(2, 3, gap_ms=0))
        assert quick == expected_tokens({"seed": 2}, 3)
        assert await long_one == expected_tokens({"seed": 1}, 30)
        assert await stopping == 0


async def test_broker_shutdown_lets_streams_in_flight_finish(
    relay: Relay, demo_llm: DemoLLMServer
) -> None:
    bodies = [stream_body(seed, 20, gap_ms=40) for seed in range(5)]
    async with relay.async_client() as client:
        tasks = [asyncio.create_task(collect(client, b)) for b in bodies]
        await wait_for(lambda: demo_llm.stats.live_streams == 5, 5, what="5 streams running")
        stopping = asyncio.create_task(relay.broker.stop(within=20))
        await asyncio.sleep(0.1)
        # The listener is closed at once: new requests cannot start any more.
        with pytest.raises(aiohttp.ClientConnectionError):
            await post_raw(f"{relay.api_url}/chat/completions", relay.key, {"model": DEMO_MODEL})
        results = await asyncio.gather(*tasks)
        await stopping
    for body, tokens in zip(bodies, results, strict=True):
        assert tokens == expected_tokens({"seed": body["seed"]}, 20)
    assert demo_llm.stats.disconnects == []


async def test_streams_longer_than_the_broker_grace_end_with_an_error_not_silence(
    tmp_path: Any, demo_llm: DemoLLMServer
) -> None:
    async with inprocess_broker(tmp_path, overrides={"shutdown_timeout": 0.5}) as broker:
        key = broker.add_user("erin")
        async with inprocess_connector(
            broker.relay_url, broker.connector_token(), demo_llm.url
        ) as c:
            relay = Relay(broker, c, key, demo_llm.url)
            await wait_models(relay, {DEMO_MODEL})
            body = stream_body(3, 400, gap_ms=20)
            body.update(body.pop("extra_body"))  # raw HTTP: the x_* fields go at the top
            request = asyncio.create_task(
                post_raw(f"{relay.api_url}/chat/completions", relay.key, body)
            )
            await wait_for(lambda: demo_llm.stats.live_streams == 1, 5, what="the stream")
            await broker.stop(within=10)
            response = await request
    events = response.data_events
    assert events[-1].event == "error"
    assert events[-1].json["error"]["code"] == "server_shutting_down"
    assert all(e.data != "[DONE]" for e in events)
    await wait_for(lambda: demo_llm.stats.disconnects, 2, what="the LLM to stop generating")
