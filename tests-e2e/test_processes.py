"""The same cases with real processes, started with the console scripts as operators do.

Here signals are real (SIGTERM drains, SIGKILL is a crash), configuration comes from flags and
``REMOTELLM_*`` variables, users are managed with ``remotellm-broker users …`` while the
broker runs, and every byte crosses process boundaries.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from harness.clients import available_models, collect
from harness.procs import BrokerProcess, Proc, broker_process, connector_process
from harness.sse import RawResponse, post_raw
from harness.tcpproxy import tcp_proxy
from harness.waits import wait_for, wait_for_async
from remotellm_connector.demo_llm import (
    DemoLLMConfig,
    DemoLLMServer,
    expected_text,
    expected_tokens,
    serve_demo_llm,
)

MODEL = "demo"


@dataclass
class ProcStack:
    broker: BrokerProcess
    connector: Proc | None
    llm: DemoLLMServer
    key: str
    workdir: Path

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.broker.api_url, api_key=self.key, max_retries=0, timeout=30.0
        )

    async def wait_models(self, expected: set[str], within: float = 15.0) -> None:
        async with self.client() as client:

            async def listed() -> bool:
                try:
                    return await available_models(client) == expected
                except openai.AuthenticationError:
                    # The key was just created with the CLI; the running broker picks the
                    # users file up within a second (its poll), not at once.
                    return False

            await wait_for_async(listed, within, what=f"the broker to list {sorted(expected)}")


def stream_body(seed: int, n: int, **x: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "from a process"}],
        "max_tokens": n,
        "seed": seed,
        "stream": True,
        "extra_body": x,
    }


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ProcStack]:
    """Broker and connector processes in front of the demo LLM; the marker ``broker_env``
    passes REMOTELLM_BROKER_* settings."""
    marker = request.node.get_closest_marker("broker_env")
    env = marker.args[0] if marker else {}
    async with (
        serve_demo_llm(DemoLLMConfig(models=(MODEL,), tokens=8)) as llm,
        broker_process(tmp_path, env=env) as broker,
    ):
        key = broker.add_user("alice")
        token = broker.connector_token("gpu-box")
        async with connector_process(broker.relay_url, token, llm.url, tmp_path) as connector:
            procs = ProcStack(broker, connector, llm, key, tmp_path)
            await procs.wait_models({MODEL})
            yield procs


async def test_chat_and_streaming_through_the_console_scripts(stack: ProcStack) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

    def sync_chat() -> str | None:
        with openai.OpenAI(base_url=stack.broker.api_url, api_key=stack.key, max_retries=0) as c:
            return c.chat.completions.create(**body).choices[0].message.content

    assert await asyncio.to_thread(sync_chat) == expected_text(body, 5)
    async with stack.client() as client:
        assert await collect(client, stream_body(7, 12)) == expected_tokens({"seed": 7}, 12)


async def test_an_invalid_key_is_rejected_by_the_broker_process(stack: ProcStack) -> None:
    async with openai.AsyncOpenAI(
        base_url=stack.broker.api_url, api_key="sk-" + "1" * 32, max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()


@pytest.mark.broker_env(
    {"REMOTELLM_BROKER_RATE_LIMIT_RPM": "6", "REMOTELLM_BROKER_RATE_LIMIT_BURST": "2"}
)
async def test_rate_limit_from_the_environment_answers_429_with_retry_after(
    stack: ProcStack,
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    url = f"{stack.broker.api_url}/chat/completions"
    statuses = [(await post_raw(url, stack.key, body)).status for _ in range(2)]
    refused = await post_raw(url, stack.key, body)
    assert statuses == [200, 200]
    assert refused.status == 429
    assert int(refused.header("Retry-After") or 0) >= 1
    assert refused.json["error"]["code"] == "rate_limit_exceeded"


async def test_a_down_llm_is_a_502_from_the_processes(tmp_path: Path) -> None:
    env = {"REMOTELLM_CONNECTOR_MODELS_REFRESH_S": "60"}  # keeps announcing the last models
    async with broker_process(tmp_path) as broker, AsyncExitStack() as outlives_the_llm:
        key = broker.add_user("bob")
        token = broker.connector_token("c")
        async with serve_demo_llm(DemoLLMConfig(models=(MODEL,))) as llm:
            await outlives_the_llm.enter_async_context(
                connector_process(broker.relay_url, token, llm.url, tmp_path, env=env)
            )
            await ProcStack(broker, None, llm, key, tmp_path).wait_models({MODEL})
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
        response = await post_raw(f"{broker.api_url}/chat/completions", key, body)
    assert response.status == 502
    assert response.json["error"]["code"] == "upstream_unreachable"


async def test_sigterm_to_the_connector_lets_streams_finish(stack: ProcStack) -> None:
    async with stack.client() as client:
        tasks = [
            asyncio.create_task(collect(client, stream_body(s, 20, x_gap_ms=40))) for s in range(4)
        ]
        await wait_for(lambda: stack.llm.stats.live_streams == 4, 10, what="4 live streams")
        assert stack.connector is not None
        stack.connector.signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
    assert results == [expected_tokens({"seed": s}, 20) for s in range(4)]
    assert await stack.connector.wait(15) == 0
    await stack.wait_models(set())


async def test_sigterm_to_the_broker_lets_streams_finish(stack: ProcStack) -> None:
    async with stack.client() as client:
        tasks = [
            asyncio.create_task(collect(client, stream_body(s, 20, x_gap_ms=40))) for s in range(4)
        ]
        await wait_for(lambda: stack.llm.stats.live_streams == 4, 10, what="4 live streams")
        stack.broker.proc.signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results == [expected_tokens({"seed": s}, 20) for s in range(4)]
    assert await stack.broker.proc.wait(20) == 0


async def test_a_killed_connector_loses_only_its_streams(tmp_path: Path) -> None:
    async with AsyncExitStack() as exits:
        broker = await exits.enter_async_context(broker_process(tmp_path))
        key = broker.add_user("load")
        llms, connectors = [], []
        for name in ("gpu-a", "gpu-b"):
            llm = await exits.enter_async_context(serve_demo_llm(DemoLLMConfig(models=(MODEL,))))
            token = broker.connector_token(name)
            proc = await exits.enter_async_context(
                connector_process(broker.relay_url, token, llm.url, tmp_path, name=name)
            )
            llms.append(llm)
            connectors.append(proc)
        stack = ProcStack(broker, connectors[0], llms[0], key, tmp_path)
        await stack.wait_models({MODEL})
        await wait_for_async(
            lambda: _connectors_up(broker, 2), 15, what="both connectors to be connected"
        )
        async with stack.client() as client:
            bodies = [stream_body(s, 60, x_gap_ms=25) for s in range(20)]
            progress: dict[int, int] = {}
            tasks = [asyncio.create_task(collect(client, b, progress)) for b in bodies]
            # All past their first token, so none can be moved to the other connector.
            await wait_for(lambda: len(progress) == 20, 10, what="20 streams to be flowing")
            doomed = llms[0].stats.live_streams
            connectors[0].kill()  # SIGKILL: a crash, not a shutdown
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            assert len(failed) == doomed > 0
            assert all(isinstance(r, openai.APIError) for r in failed)
            for seed, result in enumerate(results):
                if not isinstance(result, BaseException):
                    assert result == expected_tokens({"seed": seed}, 60)
            assert await collect(client, stream_body(99, 3)) == expected_tokens({"seed": 99}, 3)


async def _connectors_up(broker: BrokerProcess, n: int) -> bool:
    """Whether the broker has logged ``n`` connector connections (its JSON log on stderr)."""
    text = broker.proc.stderr.read_text(errors="replace")
    return text.count('"connector_connected"') >= n


async def test_a_restarted_connector_process_shows_in_the_model_list(tmp_path: Path) -> None:
    async with (
        broker_process(tmp_path) as broker,
        serve_demo_llm(DemoLLMConfig(models=("model-one",))) as one,
        serve_demo_llm(DemoLLMConfig(models=("model-two",))) as two,
    ):
        key = broker.add_user("watcher")
        token = broker.connector_token("box")
        async with connector_process(broker.relay_url, token, one.url, tmp_path, name="box") as p:
            stack = ProcStack(broker, p, one, key, tmp_path)
            await stack.wait_models({"model-one"})
            p.signal(signal.SIGTERM)
            assert await p.wait(15) == 0
            await stack.wait_models(set())
        async with connector_process(broker.relay_url, token, two.url, tmp_path, name="box"):
            await stack.wait_models({"model-two"})


async def test_a_user_blocked_with_the_cli_is_cut_off_mid_stream(stack: ProcStack) -> None:
    body = stream_body(5, 400, x_gap_ms=20)
    raw = {**{k: v for k, v in body.items() if k != "extra_body"}, **body["extra_body"]}
    url = f"{stack.broker.api_url}/chat/completions"
    received = b""
    blocked_at = 0.0
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=raw, headers={"Authorization": f"Bearer {stack.key}"}) as r,
    ):
        async for chunk in r.content.iter_any():
            received += chunk
            if not blocked_at and received.count(b"tok") >= 3:
                await asyncio.to_thread(stack.broker.block, "alice")
                blocked_at = time.monotonic()
    assert time.monotonic() - blocked_at < 3, "the broker picks up users.yaml edits in ~0.5 s"
    last = RawResponse(r.status, {}, received).data_events[-1]
    assert last.event == "error"
    assert last.json["error"]["code"] == "user_blocked"
    await wait_for(lambda: stack.llm.stats.disconnects, 2, what="the LLM to stop generating")


async def test_a_relay_reset_between_the_processes_is_an_error_then_the_connector_is_back(
    tmp_path: Path,
) -> None:
    async with (
        serve_demo_llm(DemoLLMConfig(models=(MODEL,))) as llm,
        broker_process(tmp_path) as broker,
    ):
        key = broker.add_user("carol")
        port = int(broker.url.rsplit(":", 1)[1])
        async with (
            tcp_proxy("127.0.0.1", port) as proxy,
            connector_process(proxy.url(), broker.connector_token("c"), llm.url, tmp_path) as p,
        ):
            stack = ProcStack(broker, p, llm, key, tmp_path)
            await stack.wait_models({MODEL})
            body = {**stream_body(1, 300), "x_gap_ms": 20}
            del body["extra_body"]
            request = asyncio.create_task(
                post_raw(f"{broker.api_url}/chat/completions", key, body, within=15)
            )
            await wait_for(lambda: llm.stats.live_streams == 1, 10, what="the stream")
            await asyncio.sleep(0.2)
            assert proxy.cut() == 1
            response = await request
            events = response.data_events
            assert events[-1].event == "error"
            assert all(e.data != "[DONE]" for e in events)
            await wait_for(lambda: proxy.accepted >= 2, 15, what="the connector to redial")
            await stack.wait_models({MODEL})
            async with stack.client() as client:
                assert await collect(client, stream_body(2, 4)) == expected_tokens({"seed": 2}, 4)


async def test_a_client_hanging_up_stops_the_llm_through_the_processes(stack: ProcStack) -> None:
    body = {**stream_body(3, 500), "x_gap_ms": 20}
    del body["extra_body"]
    url = f"{stack.broker.api_url}/chat/completions"
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            url, json=body, headers={"Authorization": f"Bearer {stack.key}"}
        )
        seen = b""
        while seen.count(b"tok") < 5:
            seen += await response.content.readany()
        hung_up = time.monotonic()
        response.close()
    await wait_for(lambda: stack.llm.stats.disconnects, 2, what="the LLM to see the hang-up")
    assert stack.llm.stats.disconnects[0].at - hung_up < 0.5


@pytest.mark.broker_env({"REMOTELLM_BROKER_KEEPALIVE_INTERVAL_S": "1"})
async def test_keepalive_interval_from_the_environment(stack: ProcStack) -> None:
    body = {**stream_body(4, 3), "x_ttft_ms": 2500}
    del body["extra_body"]
    response = await post_raw(f"{stack.broker.api_url}/chat/completions", stack.key, body)
    comments = [e for e in response.events if e.comment is not None]
    assert len(comments) >= 2
    assert response.data_events[-1].data == "[DONE]"
