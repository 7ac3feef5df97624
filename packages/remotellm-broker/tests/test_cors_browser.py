"""A real headless Chromium page on another loopback origin calls the API with ``fetch``:
streamed chat completions and an Anthropic Messages call (preflighted headers) work from a
listed origin, with the exposed headers readable; a page from an unlisted origin gets nothing.

Selenium is blocking, so the browser side runs in a worker thread while the loop serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from broker_rig import Rig, running_broker
from connector_peer import serve_sse
from surface_scripts import ALL_ENDPOINTS, MESSAGE_EVENTS, stream_events
from test_portal_browser import chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGE = b"<!doctype html><title>page</title><p>another origin</p>"

# Streams a chat completion and records each chunk as it arrives, then calls /v1/messages
# with the Anthropic headers (which need a preflight). Resolves with what the page could see.
FETCH_SCRIPT = """
const [base, key, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  const out = {};
  try {
    const resp = await fetch(base + "/v1/chat/completions", {
      method: "POST",
      headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
      body: JSON.stringify({model: "c", stream: true,
                            messages: [{role: "user", content: "hi"}]}),
    });
    out.status = resp.status;
    out.requestId = resp.headers.get("x-request-id");
    out.remaining = resp.headers.get("x-ratelimit-remaining-requests");
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    out.chunks = 0; out.text = "";
    for (;;) {
      const {value, done: finished} = await reader.read();
      if (finished) break;
      out.chunks += 1; out.text += decoder.decode(value, {stream: true});
    }
    const msg = await fetch(base + "/v1/messages", {
      method: "POST",
      headers: {"x-api-key": key, "anthropic-version": "2023-06-01",
                "anthropic-beta": "x", "Content-Type": "application/json",
                "x-stainless-lang": "js"},
      body: JSON.stringify({model: "m", max_tokens: 8, stream: true,
                            messages: [{role: "user", content: "hi"}]}),
    });
    out.messagesStatus = msg.status;
    out.messagesText = await msg.text();
    const denied = await fetch(base + "/v1/messages", {
      method: "POST", headers: {"x-api-key": "sk-wrong", "Content-Type": "application/json"},
      body: "{}",
    });
    out.deniedStatus = denied.status;
    out.deniedBody = await denied.json();
  } catch (err) {
    out.error = String(err);
  }
  done(out);
})();
"""


@asynccontextmanager
async def page_server(host: str) -> AsyncIterator[str]:
    """A plain page on its own origin (another port, or another host name)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def run_in_page(page_url: str, base: str, key: str) -> dict[str, Any]:
    with chromium() as driver:
        driver.set_script_timeout(20)
        driver.get(page_url + "/")
        result: dict[str, Any] = driver.execute_async_script(FETCH_SCRIPT, base, key)
        return result


async def test_a_listed_origin_streams_and_reads_the_exposed_headers(tmp_path: Path) -> None:
    async with (
        page_server("127.0.0.1") as origin,
        running_broker(tmp_path, cors_allow_origins=[origin], rate_limit_rpm=600) as rig,
    ):
        await start_peers(rig)
        seen = await asyncio.to_thread(run_in_page, origin, rig.url, rig.key)
    assert "error" not in seen, seen
    assert seen["status"] == 200
    assert seen["requestId"].startswith("req_")
    assert seen["remaining"] is not None
    assert seen["chunks"] >= 2  # the stream came in pieces, as it was produced
    assert "tok0" in seen["text"]
    assert seen["text"].rstrip().endswith("data: [DONE]")
    assert seen["messagesStatus"] == 200
    assert "message_stop" in seen["messagesText"]
    assert seen["deniedStatus"] == 401
    assert seen["deniedBody"]["error"]["type"] == "authentication_error"


async def test_an_unlisted_origin_gets_no_grant(tmp_path: Path) -> None:
    async with (
        page_server("127.0.0.1") as listed,
        page_server("localhost") as other,
        running_broker(tmp_path, cors_allow_origins=[listed]) as rig,
    ):
        peer = (await start_peers(rig))[0]
        seen = await asyncio.to_thread(run_in_page, other, rig.url, rig.key)
    assert seen.get("error", "").startswith("TypeError"), seen  # fetch refused by the browser
    assert "status" not in seen
    assert not peer.opens  # the preflight was refused, so the POST was never sent


async def start_peers(rig: Rig) -> list[Any]:
    chat = await rig.peer(name="chat", models=["c"], script=serve_sse(4, gap=0.15))
    messages = await rig.peer(
        name="messages", models=["m"], endpoints=ALL_ENDPOINTS,
        script=stream_events(MESSAGE_EVENTS),
    )  # fmt: skip
    return [chat, messages]
