"""The default stream cap: 2 x llama.cpp's ``total_slots``, else 256; an explicit value wins.

A scripted fake plays llama.cpp's ``GET /props`` (and the answers of servers that have no such
endpoint or say something else); the real llama-server is in tests-e2e/test_stream_cap.py.
The connector tests read the cap from the ``hello`` the broker receives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from broker_peer import BrokerPeer
from conftest import StartConnector
from remotellm_connector.capacity import (
    FALLBACK_MAX_STREAMS,
    MAX_STREAMS_LIMIT,
    llamacpp_slots,
    stream_cap,
)

Props = Callable[[], web.StreamResponse] | None
MODELS = {"object": "list", "data": [{"id": "m", "object": "model"}]}


async def _serve(props: Props, *, delay: float = 0.0) -> tuple[web.AppRunner, str]:
    async def get_props(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(delay)
        assert props is not None
        return props()

    async def models(_: web.Request) -> web.Response:
        return web.json_response(MODELS)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    if props is not None:
        app.router.add_get("/props", get_props)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _json(body: Any) -> Props:
    return lambda: web.json_response(body)


@pytest.mark.parametrize(
    ("props", "slots"),
    [
        (_json({"total_slots": 4, "default_generation_settings": {"n_ctx": 4096}}), 4),
        (None, None),  # vLLM, Ollama, LM Studio: no /props (404)
        (_json({"default_generation_settings": {}}), None),  # an old llama.cpp without it
        (_json({"total_slots": 0}), None),
        (_json({"total_slots": -3}), None),
        (_json({"total_slots": "4"}), None),
        (_json({"total_slots": True}), None),
        (_json({"total_slots": 2.5}), None),
        (_json([4]), None),
        (lambda: web.Response(text="<html>not json</html>"), None),
        (lambda: web.Response(status=500, text='{"total_slots": 4}'), None),
        (lambda: web.Response(status=401, text='{"error": "invalid api key"}'), None),
    ],
)
async def test_slots_come_only_from_a_well_formed_llamacpp_answer(
    http: aiohttp.ClientSession, props: Props, slots: int | None
) -> None:
    runner, url = await _serve(props)
    try:
        assert await llamacpp_slots(http, url, {}) == slots
    finally:
        await runner.cleanup()


async def test_a_server_that_does_not_answer_props_in_time_means_unknown(
    http: aiohttp.ClientSession,
) -> None:
    runner, url = await _serve(_json({"total_slots": 4}), delay=5)
    try:
        assert await llamacpp_slots(http, url, {}, wait_s=0.2) is None
    finally:
        await runner.cleanup()


def test_the_cap_an_explicit_setting_slots_or_the_fallback() -> None:
    assert stream_cap(5, 64)[0] == 5  # --max-streams always wins
    assert stream_cap(5, None)[0] == 5
    assert stream_cap(None, 4) == (8, "2 x the LLM server's 4 slots")
    assert stream_cap(None, 1)[0] == 2
    assert stream_cap(None, 50_000)[0] == MAX_STREAMS_LIMIT
    assert stream_cap(None, None)[0] == FALLBACK_MAX_STREAMS == 256


async def test_the_broker_is_told_twice_llamacpps_slots(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    runner, url = await _serve(_json({"total_slots": 3}))
    try:
        running = await start_connector(llm_url=url)
        conn = await peer.next_connection(within=10)
        assert conn.hello is not None
        assert conn.hello.max_streams == 6
        assert running.connector.policy.max_streams == 6
    finally:
        await runner.cleanup()


async def test_without_slots_the_broker_is_told_256(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    await start_connector()  # the demo LLM: no /props
    conn = await peer.next_connection(within=10)
    assert conn.hello is not None
    assert conn.hello.max_streams == FALLBACK_MAX_STREAMS


async def test_an_explicit_max_streams_wins_over_the_slots(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    runner, url = await _serve(_json({"total_slots": 3}))
    try:
        running = await start_connector(llm_url=url, max_streams=2)
        conn = await peer.next_connection(within=10)
        assert conn.hello is not None
        assert conn.hello.max_streams == 2
        assert running.connector.policy.max_streams == 2
    finally:
        await runner.cleanup()
