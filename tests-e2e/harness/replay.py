"""The recorded upstream: an aiohttp server on 127.0.0.1 that answers from the cassettes.

vcrpy replays by patching HTTP clients inside one process, but here the client of the LLM is
the connector (in-process or a subprocess), and what must be exercised is its real socket to
a real server. So the cassettes are served over HTTP instead: a request is matched by method,
path and JSON body (key order and spacing do not matter; a ``stream_options`` the connector
adds on its own is tolerated), and the recorded status, headers and body go back. A recorded
SSE body goes out event by event, each in its own write with an optional pause, as the real
server sent it; so the relay sees a stream, not one blob.

Requests nobody recorded get a 404 with an OpenAI-shaped error and are listed in ``misses``,
so a test can tell "the relay changed the request" from "the relay broke the response". The
connector's endpoint probes (``POST`` of ``{}`` to the Responses and Messages paths, see
``remotellm_connector.endpoints``) are not misses: the cassettes were recorded without them,
so the recorded server answers them 404 and is announced as serving chat completions only.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from harness.cassettes import Interaction
from remotellm_connector.endpoints import PROBED

__all__ = ["ReplayServer", "replay_key", "serve_replay", "sse_events"]

_DROPPED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n")


def _canonical(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body


def replay_key(method: str, path: str, body: bytes, *, loose: bool = False) -> str:
    """The lookup key; ``loose`` forgets ``stream_options`` (added by the connector)."""
    value = _canonical(body)
    if loose and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "stream_options"}
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return f"{method.upper()} {path} {json.dumps(value, sort_keys=True)}"


def sse_events(body: bytes) -> list[bytes]:
    """``body`` cut after each blank line: the SSE events with their separators."""
    events, start = [], 0
    for match in _EVENT_END.finditer(body):
        events.append(body[start : match.end()])
        start = match.end()
    if start < len(body):
        events.append(body[start:])
    return events


@dataclass
class ReplayServer:
    """A running replay server: its URL and what it served."""

    url: str
    served: Counter[str] = field(default_factory=Counter)
    """Interaction names served, with counts."""
    misses: list[str] = field(default_factory=list)
    """Keys of requests that matched no recording."""
    disconnects: int = 0
    """Streams whose client went away before the last event."""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def _index(interactions: Iterable[Interaction]) -> dict[str, Interaction]:
    table: dict[str, Interaction] = {}
    for item in interactions:
        for loose in (False, True):
            table.setdefault(
                replay_key(item.method, item.path, item.request_body, loose=loose), item
            )
    return table


def _headers(item: Interaction) -> dict[str, str]:
    return {k: v for k, v in item.headers.items() if k.lower() not in _DROPPED_HEADERS}


async def _stream(
    request: web.Request, item: Interaction, gap_s: float, state: ReplayServer
) -> web.StreamResponse:
    response = web.StreamResponse(status=item.status, headers=_headers(item))
    await response.prepare(request)
    events = sse_events(item.body)
    try:
        for k, event in enumerate(events):
            await response.write(event)
            if gap_s and k < len(events) - 1:
                await asyncio.sleep(gap_s)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        state.disconnects += 1
        raise
    return response


@asynccontextmanager
async def serve_replay(
    interactions: Iterable[Interaction], *, gap_s: float = 0.0, host: str = "127.0.0.1"
) -> AsyncIterator[ReplayServer]:
    """Serve the interactions on an ephemeral port for the ``async with`` block.

    ``gap_s`` paces SSE events (the recording keeps the bytes, not the timing).
    """
    table = _index(interactions)
    state = ReplayServer(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = replay_key(request.method, request.path, body)
        item = table.get(key) or table.get(
            replay_key(request.method, request.path, body, loose=True)
        )
        if item is None and request.method == "POST" and request.path in PROBED and body == b"{}":
            return web.Response(status=404, text="404 page not found")
        if item is None:
            state.misses.append(key[:300])
            message = f"no recorded interaction for {request.method} {request.path}"
            error = {"message": message, "type": "not_recorded", "param": None, "code": None}
            return web.json_response({"error": error}, status=404)
        state.served[item.name] += 1
        if item.is_sse and item.status == 200:
            return await _stream(request, item, gap_s, state)
        return web.Response(status=item.status, body=item.body, headers=_headers(item))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        bound_host, port = runner.addresses[0][:2]
        state.url = f"http://{bound_host}:{port}"
        yield state
    finally:
        await runner.cleanup()
