"""Record the cassettes: ``python tests-e2e/harness/record.py`` (or ``REMOTELLM_E2E_MODE=record``).

Without ``REMOTELLM_E2E_LLM_URL`` it starts the local llama.cpp server twice (one plain, one
with ``--embeddings``), both behind a random ``--api-key`` so the recordings really carried an
Authorization header and the scrubbing is proven on real data. The tiny random model never
emits tool calls, so the ``tools`` cassettes come from the demo LLM (serving the same model
id); against a real endpoint they come from that endpoint.

After recording, every cassette is checked for the key it was recorded with.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp

if __package__ in (None, ""):  # run as a script: make `harness` and `llama` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.cassettes import CASSETTE_DIR, CATALOGUE, Recordable, recorder
from harness.modes import upstream_choice

__all__ = ["record_all", "record_from"]


async def record_from(
    urls: Mapping[str, str],
    api_key: str | None,
    model: str,
    directory: Path = CASSETTE_DIR,
    only: Collection[str] = (),
) -> list[Path]:
    """Record the catalogue (or the entries named in ``only``); ``urls`` maps a source
    (``main``…) to a base URL."""
    written = []
    timeout = aiohttp.ClientTimeout(total=120)
    # A fresh connection per request: llama.cpp closes a kept-alive one after a stream.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for entry in CATALOGUE:
            if only and entry.name not in only:
                continue
            path = _fresh(directory / f"{entry.name}.yaml")
            with recorder().use_cassette(str(path)):
                await _send(session, entry, urls, api_key, model)
            written.append(path)
    if api_key:
        _check_scrubbed(written, api_key)
    return written


def _fresh(path: Path) -> Path:
    """vcrpy appends to an existing cassette; a re-recording starts from nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return path


def _check_scrubbed(paths: list[Path], api_key: str) -> None:
    for path in paths:
        if api_key in path.read_text(encoding="utf-8"):
            raise RuntimeError(f"{path} contains the API key: scrubbing failed")


async def _send(
    session: aiohttp.ClientSession,
    entry: Recordable,
    urls: Mapping[str, str],
    api_key: str | None,
    model: str,
) -> None:
    source = "main" if entry.source == "wrong_key" else entry.source
    key = "sk-wrong-key-for-the-401-cassette" if entry.source == "wrong_key" else api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if entry.body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(entry.body(model)).encode()
    url = urls[source] + entry.path
    async with session.request(entry.method, url, data=data, headers=headers) as response:
        body = await response.read()
        print(f"recorded {entry.name}: HTTP {response.status}, {len(body)} bytes", file=sys.stderr)


async def _first_model(url: str, api_key: str | None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/models", headers=headers) as response,
    ):
        listing = await response.json()
    return str(listing["data"][0]["id"])


@asynccontextmanager
async def _local_upstreams() -> AsyncIterator[tuple[dict[str, str], str, str]]:
    """The local llama.cpp servers and the demo LLM for tools: (urls, api key, model)."""
    from llama import start_llama_server
    from remotellm_connector.demo_llm import DemoLLMConfig, serve_demo_llm

    key = "sk-" + secrets.token_hex(16)
    async with AsyncExitStack() as stack:
        main = await asyncio.to_thread(start_llama_server, extra_args=["--api-key", key])
        stack.callback(main.stop)
        embed = await asyncio.to_thread(
            start_llama_server, extra_args=["--api-key", key, "--embeddings", "--pooling", "mean"]
        )
        stack.callback(embed.stop)
        demo = await stack.enter_async_context(
            serve_demo_llm(DemoLLMConfig(models=(main.model,), api_key=key))
        )
        yield (
            {"main": main.base_url, "embeddings": embed.base_url, "tools": demo.url},
            key,
            main.model,
        )


async def record_all(directory: Path = CASSETTE_DIR, only: Collection[str] = ()) -> list[Path]:
    """Record from ``REMOTELLM_E2E_LLM_URL`` if set, else from the local llama.cpp server."""
    choice = upstream_choice()
    if choice.llm_url is None:
        async with _local_upstreams() as (urls, key, model):
            return await record_from(urls, key, model, directory, only)
    model = choice.model or await _first_model(choice.llm_url, choice.api_key)
    urls = dict.fromkeys(("main", "embeddings", "tools"), choice.llm_url)
    return await record_from(urls, choice.api_key, model, directory, only)


if __name__ == "__main__":
    # python tests-e2e/harness/record.py [NAME ...]   (no names: the whole catalogue)
    for written in asyncio.run(record_all(only=sys.argv[1:])):
        print(written)
