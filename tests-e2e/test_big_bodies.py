"""Big bodies both ways: a 5 MiB prompt reaches the LLM byte for byte, a 5 MiB answer reaches
the client byte for byte, and both split into many relay frames on the way."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from conftest import DEMO_MODEL, Relay, wait_models
from harness.sse import post_raw
from harness.stack import BrokerHandle, inprocess_connector

MIB = 1024 * 1024


@dataclass
class Capture:
    url: str = ""
    bodies: list[bytes] = field(default_factory=list)


@asynccontextmanager
async def capturing_upstream() -> AsyncIterator[Capture]:
    """An OpenAI-ish server that keeps the raw request bodies it got and answers their hash."""
    capture = Capture()

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    async def chat(request: web.Request) -> web.Response:
        raw = await request.read()
        capture.bodies.append(raw)
        message = {"role": "assistant", "content": hashlib.sha256(raw).hexdigest()}
        return web.json_response(
            {
                "id": "chatcmpl-echo",
                "object": "chat.completion",
                "created": 0,
                "model": "echo",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )

    app = web.Application(client_max_size=64 * MIB)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        capture.url = f"http://{host}:{port}"
        yield capture
    finally:
        await runner.cleanup()


async def test_a_5_mib_request_body_reaches_the_llm_intact(broker: BrokerHandle) -> None:
    key = broker.add_user("big")
    # Varied text (not one repeated byte), with non-ASCII, so a corrupted or reordered
    # frame cannot go unnoticed.
    text = " ".join(f"wort{i}-é-{i * 7919 % 10007}" for i in range(290_000))
    message = {"role": "user", "content": text}
    body = json.dumps({"model": "echo", "messages": [message]}, ensure_ascii=False).encode()
    assert len(body) > 5 * MIB
    async with (
        capturing_upstream() as upstream,
        inprocess_connector(broker.relay_url, broker.connector_token(), upstream.url) as c,
    ):
        relay = Relay(broker, c, key, upstream.url)
        await wait_models(relay, {"echo"})
        response = await post_raw(f"{relay.api_url}/chat/completions", key, body)
    assert response.status == 200
    assert upstream.bodies == [body]
    assert response.json["choices"][0]["message"]["content"] == hashlib.sha256(body).hexdigest()


async def test_a_5_mib_response_reaches_the_client_intact(relay: Relay) -> None:
    size = 5 * MIB
    body = {
        "model": DEMO_MODEL,
        "messages": [{"role": "user", "content": "a huge answer"}],
        "x_response_bytes": size,
    }
    through_relay = await post_raw(f"{relay.api_url}/chat/completions", relay.key, body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{relay.upstream_url}/v1/chat/completions", json=body) as direct,
    ):
        direct_body = await direct.read()
    assert through_relay.status == 200
    assert len(through_relay.body) == size == len(direct_body)
    assert len(through_relay.chunks) > 1
    relayed, original = through_relay.json, json.loads(direct_body)
    for answer in (relayed, original):
        del answer["id"], answer["created"]  # fresh per response
    assert relayed == original
