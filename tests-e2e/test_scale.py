"""Many streams, several connectors: every token exact and in order, and a dying connector
costs only the streams it was carrying.

Each stream has its own seed, so the demo LLM's answer differs per stream and a token that
strayed into the wrong stream, or came out of order, fails the comparison.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import DEMO_MODEL, Relay, wait_models
from harness.clients import collect
from harness.stack import BrokerHandle, ConnectorHandle, inprocess_broker, inprocess_connector
from harness.tcpproxy import TcpProxy, tcp_proxy
from harness.waits import wait_for
from remotellm_connector.demo_llm import (
    DemoLLMConfig,
    DemoLLMServer,
    expected_tokens,
    serve_demo_llm,
)


def stream_body(seed: int, n: int, gap_ms: float) -> dict[str, Any]:
    return {
        "model": DEMO_MODEL,
        "messages": [{"role": "user", "content": f"stream {seed}"}],
        "max_tokens": n,
        "seed": seed,
        "stream": True,
        "extra_body": {"x_gap_ms": gap_ms},
    }


@pytest.fixture
async def open_broker(tmp_path: Path) -> AsyncIterator[BrokerHandle]:
    """A broker without per-key limits: one user runs a hundred streams at once here."""
    overrides = {"max_streams_per_key": 0, "rate_limit_rpm": 0, "rate_limit_burst": 0}
    async with inprocess_broker(tmp_path, overrides=overrides) as broker:
        yield broker


async def test_100_concurrent_streams_through_one_connector_arrive_exact_and_in_order(
    open_broker: BrokerHandle,
) -> None:
    key = open_broker.add_user("load")
    async with (
        serve_demo_llm(DemoLLMConfig(models=(DEMO_MODEL,))) as llm,
        inprocess_connector(
            open_broker.relay_url, open_broker.connector_token(), llm.url, max_streams=128
        ) as connector,
    ):
        relay = Relay(open_broker, connector, key, llm.url)
        await wait_models(relay, {DEMO_MODEL})
        bodies = [stream_body(seed, 20, gap_ms=25) for seed in range(100)]
        async with relay.async_client() as client:
            results = await asyncio.gather(*(collect(client, b) for b in bodies))
        for body, tokens in zip(bodies, results, strict=True):
            assert tokens == expected_tokens({"seed": body["seed"]}, 20)
        assert llm.stats.peak_streams == 100, "the streams did not all run at once"
        assert llm.stats.streams_completed == 100


async def _two_connectors(
    broker: BrokerHandle, stack: AsyncExitStack
) -> tuple[list[DemoLLMServer], list[ConnectorHandle], list[TcpProxy]]:
    """Two connectors named gpu-a and gpu-b, each with its own LLM serving the same model."""
    llms, connectors, proxies = [], [], []
    for name in ("gpu-a", "gpu-b"):
        llm = await stack.enter_async_context(serve_demo_llm(DemoLLMConfig(models=(DEMO_MODEL,))))
        proxy = await stack.enter_async_context(tcp_proxy("127.0.0.1", broker.bound.port))
        connector = await stack.enter_async_context(
            inprocess_connector(
                proxy.url(), broker.connector_token(name), llm.url, name=name, max_streams=64
            )
        )
        llms.append(llm)
        connectors.append(connector)
        proxies.append(proxy)
    return llms, connectors, proxies


async def test_two_connectors_share_the_load(open_broker: BrokerHandle) -> None:
    key = open_broker.add_user("load")
    async with AsyncExitStack() as stack:
        llms, connectors, _ = await _two_connectors(open_broker, stack)
        relay = Relay(open_broker, connectors[0], key, llms[0].url)
        await wait_models(relay, {DEMO_MODEL})
        bodies = [stream_body(seed, 10, gap_ms=20) for seed in range(40)]
        async with relay.async_client() as client:
            results = await asyncio.gather(*(collect(client, b) for b in bodies))
        assert all(
            tokens == expected_tokens({"seed": b["seed"]}, 10)
            for b, tokens in zip(bodies, results, strict=True)
        )
        served = [llm.stats.streams_completed for llm in llms]
        assert sum(served) == 40
        assert min(served) >= 12, f"least-loaded routing should split 40 streams, got {served}"


async def test_a_dying_connector_loses_only_its_in_flight_streams(
    open_broker: BrokerHandle,
) -> None:
    key = open_broker.add_user("load")
    async with AsyncExitStack() as stack:
        llms, connectors, proxies = await _two_connectors(open_broker, stack)
        relay = Relay(open_broker, connectors[0], key, llms[0].url)
        await wait_models(relay, {DEMO_MODEL})
        bodies = [stream_body(seed, 60, gap_ms=25) for seed in range(30)]
        async with relay.async_client() as client:
            progress: dict[int, int] = {}
            tasks = [asyncio.create_task(collect(client, b, progress)) for b in bodies]
            # Every stream past its first token: a stream that has not started may still be
            # moved to the other connector (test_a_request_whose_connector_vanishes…).
            await wait_for(lambda: len(progress) == 30, 10, what="30 streams to be flowing")
            doomed = llms[0].stats.live_streams
            assert doomed > 0
            # gpu-a's network dies for good: its relay socket is reset, it cannot come back.
            proxies[0].refusing = True
            proxies[0].cut()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            assert len(failed) == doomed
            assert all(isinstance(r, openai.APIError) for r in failed), failed
            for body, result in zip(bodies, results, strict=True):
                if not isinstance(result, BaseException):
                    assert result == expected_tokens({"seed": body["seed"]}, 60)
            # New work goes to the survivor.
            after = [stream_body(seed, 5, gap_ms=0) for seed in range(100, 110)]
            again = await asyncio.gather(*(collect(client, b) for b in after))
        assert all(
            t == expected_tokens({"seed": b["seed"]}, 5) for b, t in zip(after, again, strict=True)
        )
        assert llms[1].stats.streams_completed == 30 - doomed + 10


async def test_models_follow_connectors_coming_and_going(broker: BrokerHandle) -> None:
    key = broker.add_user("watcher")
    async with (
        serve_demo_llm(DemoLLMConfig(models=("llama-a",))) as llm_a,
        serve_demo_llm(DemoLLMConfig(models=("qwen-b", "mistral-c"))) as llm_b,
    ):
        token = broker.connector_token("box")
        async with inprocess_connector(broker.relay_url, token, llm_a.url, name="box") as first:
            relay = Relay(broker, first, key, llm_a.url)
            await wait_models(relay, {"llama-a"})
        await wait_models(relay, set())  # the connector stopped: nothing is served
        # The same connector name comes back, now in front of another LLM server.
        async with inprocess_connector(broker.relay_url, token, llm_b.url, name="box") as second:
            relay.connector = second
            await wait_models(relay, {"qwen-b", "mistral-c"})
            async with relay.async_client() as client:
                # Served minutes ago: still known, listed unavailable (model_memory_s).
                gone = await client.models.retrieve("llama-a")
                assert gone.model_extra is not None
                assert gone.model_extra["available"] is False
                with pytest.raises(openai.NotFoundError):
                    await client.models.retrieve("never-served")
                assert (await client.models.retrieve("qwen-b")).id == "qwen-b"
        await wait_models(relay, set())
        async with inprocess_connector(broker.relay_url, token, llm_a.url, name="box") as third:
            relay.connector = third
            await wait_models(relay, {"llama-a"})


async def test_a_request_whose_connector_vanishes_before_the_first_byte_goes_to_another(
    open_broker: BrokerHandle,
) -> None:
    """DESIGN: "a request whose connector vanishes before the first byte is retried on
    another". The first byte is the first body byte: the LLM is still in its prefill."""
    key = open_broker.add_user("retry")
    async with AsyncExitStack() as stack:
        llms, connectors, proxies = await _two_connectors(open_broker, stack)
        relay = Relay(open_broker, connectors[0], key, llms[0].url)
        await wait_models(relay, {DEMO_MODEL})
        body = stream_body(42, 6, gap_ms=0)
        body["extra_body"]["x_ttft_ms"] = 1000
        async with relay.async_client() as client:
            request = asyncio.create_task(collect(client, body))
            await wait_for(
                lambda: any(llm.stats.live_streams for llm in llms), 5, what="the prefill"
            )
            chosen = next(i for i, llm in enumerate(llms) if llm.stats.live_streams)
            proxies[chosen].refusing = True
            proxies[chosen].cut()
            tokens = await request
        assert tokens == expected_tokens({"seed": 42}, 6)
        assert llms[1 - chosen].stats.streams_completed == 1
