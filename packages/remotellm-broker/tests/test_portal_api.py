"""The key from the portal works on the broker's OpenAI API, and the examples on the key page
run as printed: the Python snippet with the real ``openai`` SDK, the curl lines with curl."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from broker_rig import wait_for
from connector_peer import ConnectorPeer, PeerStream, serve_json, serve_sse
from portal_rig import Page, PortalRig, running_portal
from remotellm_broker.app import BROKER

MODEL = "demo-llm"
COMPLETION = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "tok0 tok1 tok2 "},
                "finish_reason": "stop",
            }
        ],
    }
).encode()


async def answer(stream: PeerStream) -> None:
    """A connector that answers like an OpenAI server: SSE if asked to stream, else JSON."""
    await stream.body_done.wait()
    streaming = json.loads(bytes(stream.body) or b"{}").get("stream") is True
    script = serve_sse(3) if streaming else serve_json(COMPLETION)
    await script(stream)


@contextlib.asynccontextmanager
async def portal_with_connector(tmp_path: Path) -> AsyncIterator[PortalRig]:
    async with running_portal(tmp_path) as rig:
        token = rig.store.create_connector_token("home-gpu")
        peer = ConnectorPeer(rig.relay_url, token, name="home-gpu", models=(MODEL,), script=answer)
        await peer.connect()
        try:
            await wait_for(lambda: _serving(rig))
            yield rig
        finally:
            await peer.close()


def _serving(rig: PortalRig) -> bool:
    state = rig.app.get(BROKER)
    return state is not None and MODEL in {m.id for m in state.registry.models()}


def _code_block(page: Page, block_id: str) -> str:
    found = re.search(rf'<code id="{block_id}">(.*?)</code>', page.text, re.DOTALL)
    assert found is not None, block_id
    return html.unescape(found.group(1))


async def _models(rig: PortalRig, key: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{rig.url}/v1/models", headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        return r.status, await r.json()


async def test_the_portal_key_lists_models_and_chats(tmp_path: Path) -> None:
    async with portal_with_connector(tmp_path) as rig:
        page = await rig.browser().login()
        key = page.key()
        assert key is not None

        status, body = await _models(rig, key)
        assert status == 200
        assert [m["id"] for m in body["data"]] == [MODEL]

        client = openai.AsyncOpenAI(base_url=f"{rig.url}/v1", api_key=key, max_retries=0)
        try:
            reply = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hello!"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in reply if c.choices])
        finally:
            await client.close()
        assert text == "tok0 tok1 tok2 "


async def test_the_key_page_uses_a_model_the_connectors_serve(tmp_path: Path) -> None:
    async with portal_with_connector(tmp_path) as rig:
        page = await rig.browser().login()
        assert f'"model": "{MODEL}"' in _code_block(page, "curl-chat")
        assert _code_block(page, "cline-model") == MODEL
        assert f"<code>{MODEL}</code>" in page.text  # "Models available right now"


async def test_the_python_example_runs_as_printed(tmp_path: Path) -> None:
    async with portal_with_connector(tmp_path) as rig:
        page = await rig.browser().login()
        source = _code_block(page, "python-example")

        printed: list[str] = []

        def run() -> None:
            namespace = {"__name__": "example", "print": lambda *a: printed.append(" ".join(a))}
            exec(compile(source, "key-page-example.py", "exec"), namespace)

        await asyncio.to_thread(run)
        assert printed == ["tok0 tok1 tok2 "]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("block_id", ["curl-models", "curl-chat"])
async def test_the_curl_examples_run_as_printed(tmp_path: Path, block_id: str) -> None:
    async with portal_with_connector(tmp_path) as rig:
        page = await rig.browser().login()
        command = _code_block(page, block_id) + " --silent --show-error --fail-with-body"
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, stderr
        assert MODEL.encode() in stdout or b"tok0" in stdout


async def test_a_rotated_key_is_refused_by_the_api_at_once(tmp_path: Path) -> None:
    async with portal_with_connector(tmp_path) as rig:
        browser = rig.browser()
        old_key = (await browser.login()).key()
        token = (await browser.get("/")).csrf()
        assert old_key is not None
        assert token is not None

        new_key = (await browser.post("/auth/rotate", {"csrf_token": token})).key()
        assert new_key is not None

        assert (await _models(rig, old_key))[0] == 401
        assert (await _models(rig, new_key))[0] == 200


async def test_a_blocked_users_key_is_refused_by_the_api(tmp_path: Path) -> None:
    async with portal_with_connector(tmp_path) as rig:
        key = (await rig.browser().login()).key()
        assert key is not None
        rig.store.block("ada")
        assert (await _models(rig, key))[0] == 403


async def test_gitlab_down_does_not_touch_existing_keys(tmp_path: Path) -> None:
    async with portal_with_connector(tmp_path) as rig:
        key = (await rig.browser().login()).key()
        assert key is not None
        await rig.fake.stop()
        assert (await rig.browser().get("/auth/login")).status == 502
        assert (await _models(rig, key))[0] == 200
