"""Finding the LLM server, its models and their context lengths; announcing changes."""

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from broker_peer import BrokerPeer
from conftest import StartConnector
from remotellm_connector.demo_llm import DemoLLMConfig, DemoLLMServer, serve_demo_llm
from remotellm_connector.discovery import LLMError, ModelWatcher, detect_llm, list_models
from remotellm_connector.upstream import Upstream
from remotellm_protocol import ModelInfo

DEMO = ModelInfo(id="demo", owned_by="remotellm-demo", context_length=8192)


class FakeServer:
    """A model list plus whatever extra routes a server family has."""

    def __init__(self) -> None:
        self.models: list[dict[str, Any]] = [{"id": "m1", "owned_by": "me"}]
        self.props: dict[str, Any] | None = None
        self.show: dict[str, dict[str, Any]] = {}
        self.hits: list[str] = []
        self.status = 200

    async def list_models(self, request: web.Request) -> web.Response:
        self.hits.append("/v1/models")
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response({"object": "list", "data": self.models})

    async def get_props(self, request: web.Request) -> web.Response:
        self.hits.append("/props")
        if self.props is None:
            return web.Response(status=404)
        return web.json_response(self.props)

    async def post_show(self, request: web.Request) -> web.Response:
        self.hits.append("/api/show")
        model = (await request.json())["model"]
        if model not in self.show:
            return web.Response(status=404)
        return web.json_response(self.show[model])


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeServer, str]]:
    server = FakeServer()
    app = web.Application()
    app.router.add_get("/v1/models", server.list_models)
    app.router.add_get("/props", server.get_props)
    app.router.add_post("/api/show", server.post_show)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield server, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_vllm_reports_max_model_len_in_the_list(
    demo: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    models = await list_models(http, demo.url, {})
    assert models == [ModelInfo(id="demo", owned_by="remotellm-demo", context_length=8192)]


async def test_llamacpp_context_comes_from_props(
    fake: tuple[FakeServer, str], http: aiohttp.ClientSession
) -> None:
    server, url = fake
    server.props = {"default_generation_settings": {"n_ctx": 4096}}
    assert await list_models(http, url, {}) == [
        ModelInfo(id="m1", owned_by="me", context_length=4096)
    ]


async def test_ollama_context_comes_from_show_num_ctx_then_model_info(
    fake: tuple[FakeServer, str], http: aiohttp.ClientSession
) -> None:
    server, url = fake
    server.models = [{"id": "llama3:8b", "owned_by": "library"}, {"id": "qwen", "owned_by": "x"}]
    server.show = {
        "llama3:8b": {"parameters": "stop <eot>\nnum_ctx 16384", "model_info": {}},
        "qwen": {"model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768}},
    }
    models = await list_models(http, url, {})
    assert [(m.id, m.context_length) for m in models] == [("llama3:8b", 16384), ("qwen", 32768)]


async def test_unknown_context_is_none_and_cached(
    fake: tuple[FakeServer, str], http: aiohttp.ClientSession
) -> None:
    server, url = fake
    cache: dict[str, int | None] = {}
    assert (await list_models(http, url, {}, cache))[0].context_length is None
    hits = len(server.hits)
    await list_models(http, url, {}, cache)
    assert server.hits[hits:] == ["/v1/models"]  # one request per refresh once known


async def test_errors_say_what_went_wrong(
    fake: tuple[FakeServer, str], http: aiohttp.ClientSession
) -> None:
    server, url = fake
    server.status = 404
    with pytest.raises(LLMError, match="HTTP 404") as caught:
        await list_models(http, url, {})
    assert caught.value.status == 404
    with pytest.raises(LLMError) as refused:
        await list_models(http, free_url(), {})
    assert refused.value.kind == "refused"


async def test_autodetect_picks_the_first_candidate_that_answers(
    demo: DemoLLMServer, fake: tuple[FakeServer, str], http: aiohttp.ClientSession
) -> None:
    _, fake_url = fake
    candidates = [("Ollama", free_url()), ("llama.cpp", demo.url), ("vLLM", fake_url)]
    assert await detect_llm(http, {}, candidates) == ("llama.cpp", demo.url)
    assert await detect_llm(http, {}, [("x", free_url())]) is None


async def test_watcher_bumps_the_version_on_change_and_marks_models_down_after_two_failures(
    fake: tuple[FakeServer, str],
) -> None:
    server, url = fake
    async with Upstream(url) as upstream:
        watcher = ModelWatcher(upstream, autodetect=False, interval=60)
        await watcher.refresh()
        assert watcher.reachable
        assert watcher.version == 1
        await watcher.refresh()
        assert watcher.version == 1  # same list, no announcement
        server.models = [{"id": "m2"}]
        await watcher.refresh()
        assert watcher.version == 2
        assert watcher.model_ids == {"m2"}
        server.status = 500
        await watcher.refresh()
        assert not watcher.reachable
        assert watcher.models != []  # one failure: keep the list
        await watcher.refresh()
        # known, not served (endpoints: what the last probe found)
        assert [(m.id, m.available) for m in watcher.models] == [("m2", False)]
        assert watcher.version == 3
        server.status = 200
        await watcher.refresh()
        assert [(m.id, m.available) for m in watcher.models] == [("m2", True)]
        assert watcher.version == 4


async def test_model_changes_reach_the_broker_as_a_models_frame(
    peer: BrokerPeer, fake: tuple[FakeServer, str], start_connector: StartConnector
) -> None:
    server, url = fake
    await start_connector(llm_url=url, models_refresh_s=0.05)
    conn = await peer.next_connection()
    assert conn.hello is not None
    assert [m.id for m in conn.hello.models] == ["m1"]
    server.models = [{"id": "m1"}, {"id": "m2"}]
    frame = await conn.wait_models(1)
    assert [m.id for m in frame.models] == ["m1", "m2"]


async def test_watcher_finds_an_llm_server_that_starts_later() -> None:
    url = free_url()
    port = int(url.rsplit(":", 1)[1])
    async with Upstream(None) as upstream:
        watcher = ModelWatcher(upstream, autodetect=True, interval=60, candidates=[("demo", url)])
        await watcher.refresh()
        assert not watcher.reachable
        assert watcher.error is not None
        async with serve_demo_llm(DemoLLMConfig(tokens=1), port=port):
            await watcher.refresh()
            assert watcher.reachable
            assert upstream.base_url == url
            assert watcher.model_ids == {"demo"}


async def test_connector_starts_without_its_llm_and_announces_it_when_it_comes(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    url = free_url()
    running = await start_connector(llm_url=url, models_refresh_s=0.05)
    conn = await peer.next_connection()
    assert conn.hello is not None
    assert conn.hello.models == []
    assert "LLM server is not reachable" in running.connector.status.problems()
    async with serve_demo_llm(DemoLLMConfig(tokens=1), port=int(url.rsplit(":", 1)[1])):
        frame = await conn.wait_models(1)
        assert [m.id for m in frame.models] == ["demo"]
        assert running.connector.status.problems() == []


def _bare(models: list[ModelInfo]) -> list[ModelInfo]:
    """The models without the endpoints the probes found (the demo LLM answers them all)."""
    return [msgspec.structs.replace(m, endpoints=None) for m in models]


async def test_a_dead_llm_keeps_its_models_known_and_they_return_within_two_seconds(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    url = free_url()
    port = int(url.rsplit(":", 1)[1])
    async with serve_demo_llm(DemoLLMConfig(tokens=1), port=port):
        running = await start_connector(llm_url=url, models_refresh_s=30, llm_probe_interval_s=0.5)
        conn = await peer.next_connection()
        assert conn.hello is not None
        assert _bare(conn.hello.models) == [DEMO]
    # The server died between two 30 s refreshes: a request that finds it gone makes the
    # connector look at once, and the model is announced unavailable, not withdrawn.
    stream = await conn.open(path="/v1/chat/completions", body=b'{"model":"demo"}')
    await stream.wait_end()
    down = await conn.wait_models(1)
    assert _bare(down.models) == [msgspec.structs.replace(DEMO, available=False)]
    assert "LLM server is not reachable" in running.connector.status.problems()
    async with serve_demo_llm(DemoLLMConfig(tokens=1), port=port):
        back_at = asyncio.get_running_loop().time()
        up = await conn.wait_models(2)
        assert _bare(up.models) == [DEMO]
        assert asyncio.get_running_loop().time() - back_at < 2.0
