"""Probing which APIs the LLM server routes, against servers that answer the way llama-server,
vLLM, Ollama and LM Studio do; and announcing what was found."""

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from broker_peer import BrokerPeer
from conftest import StartConnector
from remotellm_connector.discovery import ModelWatcher
from remotellm_connector.endpoints import BASELINE, PROBED, probe_endpoints
from remotellm_connector.upstream import Upstream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def refuse(status: int, body: str, content_type: str = "application/json") -> Handler:
    """A route that exists but cannot take an empty body."""

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, await request.read()))
        return web.Response(status=status, text=body, content_type=content_type)

    return handler


seen: list[tuple[str, bytes]] = []


async def models(request: web.Request) -> web.StreamResponse:
    return web.json_response({"object": "list", "data": [{"id": "m1"}]})


async def lm_studio_unknown(request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": f"Unexpected endpoint or method. (POST {request.path})"})


# What each server family answers for POST <path> with the body {} (routes it has), and its
# not-found answer for the others (aiohttp's own 404 stands in for the plain-text ones).
FAMILIES: dict[str, dict[str, Handler]] = {
    "llama.cpp": {
        "/v1/responses": refuse(500, '{"error":{"code":500,"message":"[json.exception]"}}'),
        "/v1/messages": refuse(400, '{"error":{"code":400,"message":"messages is required"}}'),
        "/v1/messages/count_tokens": refuse(500, '{"error":{"code":500}}'),
    },
    "vLLM": {
        "/v1/responses": refuse(400, '{"error":{"message":"Field required: input"}}'),
        "/v1/messages": refuse(400, '{"error":{"message":"Field required: model"}}'),
    },
    "Ollama": {
        "/v1/responses": refuse(400, '{"error":{"message":"model is required"}}'),
    },
    "LM Studio": {},
}
EXPECTED = {
    "llama.cpp": [*BASELINE, *PROBED],
    "vLLM": [*BASELINE, "/v1/responses", "/v1/messages"],
    "Ollama": [*BASELINE, "/v1/responses"],
    "LM Studio": list(BASELINE),
}


async def serve(routes: dict[str, Handler], *, lm_studio: bool = False) -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/v1/models", models)
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    if lm_studio:
        app.router.add_post("/{tail:.*}", lm_studio_unknown)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_each_server_family_is_probed_right(http: aiohttp.ClientSession, family: str) -> None:
    seen.clear()
    runner = await serve(FAMILIES[family], lm_studio=family == "LM Studio")
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        found = await probe_endpoints(http, url, {}, 2.0)
    finally:
        await runner.cleanup()
    assert found == EXPECTED[family]
    # the probes carry nothing a server could generate from
    assert all(body == b"{}" for _, body in seen)


async def test_a_server_that_is_down_offers_only_the_baseline(http: aiohttp.ClientSession) -> None:
    runner = await serve({})
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()
    assert await probe_endpoints(http, url, {}, 1.0) == list(BASELINE)


@pytest.mark.parametrize("status", [401, 403, 404, 405, 501, 503, 200, 204])
async def test_answers_that_say_nothing_about_the_route_count_as_unsupported(
    http: aiohttp.ClientSession, status: int
) -> None:
    runner = await serve({path: refuse(status, "{}") for path in PROBED})
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        assert await probe_endpoints(http, url, {}, 2.0) == list(BASELINE)
    finally:
        await runner.cleanup()


async def test_the_watcher_announces_endpoints_and_re_probes_on_each_refresh() -> None:
    routes: dict[str, Handler] = {}
    app = web.Application()
    app.router.add_get("/v1/models", models)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        handler = routes.get(request.path)
        if handler is None:
            raise web.HTTPNotFound()
        return await handler(request)

    app.router.add_post("/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with Upstream(f"http://127.0.0.1:{runner.addresses[0][1]}") as upstream:
            watcher = ModelWatcher(upstream, autodetect=False, interval=60)
            await watcher.refresh()
            assert watcher.models[0].endpoints == list(BASELINE)
            assert watcher.version == 1
            routes["/v1/messages"] = refuse(400, "{}")  # the server was upgraded
            await watcher.refresh()
            assert watcher.version == 2
            assert watcher.models[0].endpoints == [*BASELINE, "/v1/messages"]
    finally:
        await runner.cleanup()


async def test_the_broker_hears_the_endpoints_in_hello(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    runner = await serve(FAMILIES["llama.cpp"])
    try:
        await start_connector(llm_url=f"http://127.0.0.1:{runner.addresses[0][1]}")
        conn = await peer.next_connection()
        assert conn.hello is not None
        assert conn.hello.models[0].endpoints == [*BASELINE, *PROBED]
    finally:
        await runner.cleanup()
