"""The recordings themselves: complete, free of credentials, and served faithfully.

The cassettes were recorded from a real llama.cpp server running with ``--api-key``, so every
recorded request carried ``Authorization: Bearer sk-…``; these tests prove none of it was kept,
and that the replay server hands back exactly the recorded bytes, event by event.
"""

from __future__ import annotations

import re

import aiohttp
import pytest

from harness.cassettes import CASSETTE_DIR, CATALOGUE, Interaction
from harness.replay import serve_replay, sse_events

CREDENTIAL_PATTERNS = [
    re.compile(
        r"(?im)^\s*-?\s*['\"]?(authorization|proxy-authorization|api-key|x-api-key|cookie)"
        r"['\"]?\s*:"
    ),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"\brct-[0-9a-f]{16,}"),
]


def test_every_cassette_is_free_of_credentials() -> None:
    files = sorted(CASSETTE_DIR.glob("*.yaml"))
    assert files, "no cassettes found"
    for path in files:
        text = path.read_text(encoding="utf-8")
        for pattern in CREDENTIAL_PATTERNS:
            found = pattern.search(text)
            assert found is None, f"{path.name} holds a credential: {found.group(0)[:40]!r}"


def test_the_credential_scan_would_catch_a_leak() -> None:
    leaked = "headers:\n  Authorization:\n  - Bearer sk-0123456789abcdef0123456789abcdef\n"
    assert all(p.search(leaked) for p in CREDENTIAL_PATTERNS[:3])


def test_every_catalogue_entry_was_recorded(recorded: list[Interaction]) -> None:
    assert {i.name for i in recorded} == {entry.name for entry in CATALOGUE}


def test_the_recordings_cover_streams_errors_and_tool_calls(recorded: list[Interaction]) -> None:
    by_name = {i.name: i for i in recorded}
    assert by_name["chat_stream"].is_sse
    assert by_name["chat_stream"].body.endswith(b"data: [DONE]\n\n")
    assert {i.status for i in recorded if i.status >= 400} >= {400, 401, 501}
    assert b'"tool_calls"' in by_name["tool_calls_stream"].body
    assert b'"embedding"' in by_name["embeddings"].body


@pytest.mark.parametrize("entry", [e.name for e in CATALOGUE])
async def test_replay_serves_the_recorded_bytes(recorded: list[Interaction], entry: str) -> None:
    item = next(i for i in recorded if i.name == entry)
    async with (
        serve_replay(recorded) as upstream,
        aiohttp.ClientSession() as session,
        session.request(
            item.method,
            upstream.url + item.path,
            data=item.request_body or None,
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        body = await response.read()
    assert (response.status, body) == (item.status, item.body)
    assert response.headers["Content-Type"] == item.content_type
    assert upstream.served == {entry: 1}


async def test_replay_sends_a_stream_event_by_event(recorded: list[Interaction]) -> None:
    item = next(i for i in recorded if i.name == "chat_stream")
    arrivals: list[bytes] = []
    async with (
        serve_replay(recorded, gap_s=0.01) as upstream,
        aiohttp.ClientSession() as session,
        session.post(upstream.url + item.path, data=item.request_body) as response,
    ):
        async for chunk in response.content.iter_any():
            arrivals.append(chunk)
    assert b"".join(arrivals) == item.body
    assert len(arrivals) == len(sse_events(item.body)) > 5


async def test_replay_refuses_what_was_never_recorded(recorded: list[Interaction]) -> None:
    async with (
        serve_replay(recorded) as upstream,
        aiohttp.ClientSession() as session,
        session.post(upstream.url + "/v1/chat/completions", json={"model": "x"}) as response,
    ):
        error = await response.json()
    assert response.status == 404
    assert error["error"]["type"] == "not_recorded"
    assert len(upstream.misses) == 1
