"""Model availability: a model whose LLM server is down, whose connector is reconnecting or
draining is still known (503 with ``Retry-After`` after the attach wait, or served as soon as
a connector can take it); only a model nobody served recently is 404 (issues 12 §4, 15 §2-3).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker_rig import Rig, assert_openai_error, running_broker, wait_for
from connector_peer import fail_with, serve_json
from remotellm_protocol import ErrorCode, GoAway
from surface_scripts import ALL_ENDPOINTS

CHAT = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
ANSWER = b'{"id":"c1","object":"chat.completion","choices":[]}'


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path, attach_wait_s=5.0, model_memory_s=60.0) as rig:
        yield rig


async def _post(rig: Rig, body: dict[str, Any] = CHAT) -> tuple[int, dict[str, str], Any]:
    async with rig.http.post(rig.url + "/v1/chat/completions", json=body, headers=rig.auth) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def _listing(rig: Rig) -> dict[str, bool]:
    async with rig.http.get(rig.url + "/v1/models", headers=rig.auth) as resp:
        assert resp.status == 200
        return {m["id"]: m["available"] for m in (await resp.json())["data"]}


def _waiting(rig: Rig) -> int:
    return len(rig.state.router.queue)


# -- the LLM server behind an attached connector is down (issue 12 §4) -------------------------


async def test_a_model_whose_llm_is_down_is_listed_unavailable_and_gets_503_with_retry_after(
    tmp_path: Path,
) -> None:
    async with running_broker(tmp_path, attach_wait_s=0.3) as rig:
        peer = await rig.peer(available=False, script=serve_json(ANSWER))
        assert await _listing(rig) == {"m": False}
        started = time.monotonic()
        status, headers, body = await _post(rig)
        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        assert_openai_error(body, "model_unavailable")
        assert "not answering" in body["error"]["message"]
        assert time.monotonic() - started >= 0.3  # it waited the attach wait first
        assert peer.opens == []  # nothing was routed to the dead server
        async with rig.http.get(rig.url + "/v1/models/m", headers=rig.auth) as resp:
            assert resp.status == 200
            assert (await resp.json())["available"] is False


async def test_a_request_waiting_for_a_down_llm_is_served_when_it_is_announced_back(
    rig: Rig,
) -> None:
    peer = await rig.peer(available=False, script=serve_json(ANSWER))
    request = asyncio.create_task(_post(rig))
    await wait_for(lambda: _waiting(rig) == 1)
    await peer.announce(["m"], available=True)
    status, _, body = await request
    assert status == 200
    assert body["object"] == "chat.completion"
    assert await _listing(rig) == {"m": True}


async def test_a_connector_reporting_its_llm_down_keeps_the_model_known(rig: Rig) -> None:
    peer = await rig.peer(script=serve_json(ANSWER))
    await peer.announce(["m"], available=False)
    await wait_for(lambda: rig.state.registry.model_info("m").available is False)
    assert await _listing(rig) == {"m": False}
    request = asyncio.create_task(_post(rig))
    await wait_for(lambda: _waiting(rig) == 1)
    assert peer.opens == []
    await peer.announce(["m"])
    assert (await request)[0] == 200


async def test_an_unreachable_upstream_error_carries_retry_after(rig: Rig) -> None:
    await rig.peer(script=fail_with(ErrorCode.UPSTREAM_UNREACHABLE, "connection refused"))
    status, headers, body = await _post(rig)
    assert status == 502
    assert_openai_error(body, "upstream_unreachable")
    assert int(headers["Retry-After"]) >= 1


# -- no connector attached: a blip is not "model does not exist" (issue 15 §3) ------------------


async def test_a_request_during_a_reconnect_waits_and_is_served_by_the_returning_connector(
    rig: Rig,
) -> None:
    old = await rig.peer(name="gpu", script=serve_json(ANSWER))
    await old.drop()
    await wait_for(lambda: len(rig.state.registry) == 0)
    assert await _listing(rig) == {"m": False}
    request = asyncio.create_task(_post(rig))
    await wait_for(lambda: _waiting(rig) == 1)
    back = await rig.peer(name="gpu", script=serve_json(ANSWER))
    status, _, body = await request
    assert status == 200, body
    assert len(back.opens) == 1
    assert await _listing(rig) == {"m": True}


async def test_a_recently_served_model_gets_503_with_retry_after_when_nobody_returns(
    tmp_path: Path,
) -> None:
    async with running_broker(tmp_path, attach_wait_s=0.3, model_memory_s=60.0) as rig:
        peer = await rig.peer()
        await peer.drop()
        await wait_for(lambda: len(rig.state.registry) == 0)
        status, headers, body = await _post(rig)
        assert status == 503
        assert_openai_error(body, "model_unavailable")
        assert "No connector" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1


async def test_only_a_model_nobody_served_within_the_memory_is_404(tmp_path: Path) -> None:
    async with running_broker(tmp_path, attach_wait_s=0.5, model_memory_s=0.3) as rig:
        await wait_for(lambda: not rig.state.starting())
        status, _, body = await _post(rig, {**CHAT, "model": "never-served"})
        assert (status, body["error"]["code"]) == (404, "model_not_found")
        peer = await rig.peer()
        await peer.drop()
        await wait_for(lambda: len(rig.state.registry) == 0)
        assert rig.state.registry.known("m")
        await wait_for(lambda: not rig.state.registry.known("m"))
        started = time.monotonic()
        status, headers, body = await _post(rig)
        assert (status, body["error"]["code"]) == (404, "model_not_found")
        assert "Retry-After" not in headers
        assert time.monotonic() - started < 0.4  # no attach wait for an unknown model
        assert await _listing(rig) == {}


# -- a draining connector never strands a request (issue 15 §2) ----------------------------------


async def test_a_draining_connector_takes_nothing_new_and_requests_go_to_another(
    rig: Rig,
) -> None:
    draining = await rig.peer(name="a", script=serve_json(ANSWER))
    other = await rig.peer(name="b", script=serve_json(ANSWER))
    await draining.send(GoAway(reason="connector shutting down"))
    await wait_for(lambda: not next(c for c in rig.state.registry if c.name == "a").accepting)
    started = time.monotonic()
    results = await asyncio.gather(*(_post(rig) for _ in range(4)))
    assert [status for status, _, _ in results] == [200] * 4
    assert time.monotonic() - started < 2.0  # no waiting: another connector was there
    assert (len(draining.opens), len(other.opens)) == (0, 4)


async def test_a_request_during_the_only_connectors_drain_is_served_by_its_successor(
    rig: Rig,
) -> None:
    old = await rig.peer(name="gpu", script=serve_json(ANSWER))
    await old.send(GoAway(reason="connector shutting down"))
    await wait_for(lambda: not next(iter(rig.state.registry)).accepting)
    request = asyncio.create_task(_post(rig))
    await wait_for(lambda: _waiting(rig) == 1)
    await old.close()
    new = await rig.peer(name="gpu", script=serve_json(ANSWER))
    status, _, _ = await request
    assert status == 200
    assert (len(old.opens), len(new.opens)) == (0, 1)


async def test_an_open_crossing_the_goaway_waits_for_a_successor_instead_of_failing(
    rig: Rig,
) -> None:
    old = await rig.peer(name="gpu", script=fail_with(ErrorCode.GOING_AWAY, "shutting down"))
    request = asyncio.create_task(_post(rig))
    await wait_for(lambda: len(old.opens) == 1 and _waiting(rig) == 1)
    await old.close()
    new = await rig.peer(name="gpu", script=serve_json(ANSWER))
    status, _, _ = await request
    assert status == 200
    assert len(new.opens) == 1


async def test_a_drain_with_no_successor_ends_in_503_with_retry_after(tmp_path: Path) -> None:
    async with running_broker(tmp_path, attach_wait_s=0.3) as rig:
        peer = await rig.peer(script=serve_json(ANSWER))
        await peer.send(GoAway(reason="connector shutting down"))
        await wait_for(lambda: not next(iter(rig.state.registry)).accepting)
        status, headers, body = await _post(rig)
        assert status == 503
        assert_openai_error(body, "model_unavailable")
        assert int(headers["Retry-After"]) >= 1
        assert peer.opens == []


async def test_a_draining_broker_answers_its_connected_clients_503_with_retry_after_at_once(
    rig: Rig,
) -> None:
    await rig.peer(script=serve_json(ANSWER))
    async with aiohttp.ClientSession() as keepalive:  # one connection, kept alive
        async with keepalive.post(
            rig.url + "/v1/chat/completions", json=CHAT, headers=rig.auth
        ) as resp:
            assert resp.status == 200
        rig.state.begin_shutdown()
        started = time.monotonic()
        async with keepalive.post(
            rig.url + "/v1/chat/completions", json=CHAT, headers=rig.auth
        ) as resp:
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) >= 1
            assert_openai_error(await resp.json(), "server_shutting_down")
        assert time.monotonic() - started < 2.0


# -- a broker that just started (a restart) waits for its connectors ---------------------------


async def test_a_fresh_broker_holds_a_request_until_a_connector_brings_its_model(
    tmp_path: Path,
) -> None:
    async with running_broker(tmp_path, attach_wait_s=5.0) as rig:
        assert rig.state.starting()
        request = asyncio.create_task(_post(rig))
        await wait_for(lambda: _waiting(rig) == 1)
        await rig.peer(script=serve_json(ANSWER))
        status, _, _ = await request
        assert status == 200


async def test_a_fresh_broker_answers_404_once_no_connector_brought_the_model(
    tmp_path: Path,
) -> None:
    async with running_broker(tmp_path, attach_wait_s=0.3) as rig:
        status, headers, body = await _post(rig, {**CHAT, "model": "never-served"})
        assert (status, body["error"]["code"]) == (404, "model_not_found")
        assert "Retry-After" not in headers


async def test_a_down_llm_or_a_gone_connector_is_not_a_missing_endpoint(tmp_path: Path) -> None:
    """/v1/messages and /v1/responses for a model whose LLM is down (or whose connector is
    reconnecting) got a 400 unsupported_endpoint, an error Claude Code and Codex do not
    retry, instead of the 503 + Retry-After that chat completions get."""
    msg = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
    async with running_broker(tmp_path, attach_wait_s=0.3, model_memory_s=60.0) as rig:
        peer = await rig.peer(available=False, endpoints=ALL_ENDPOINTS)
        for _ in range(2):  # the LLM down, then the connector gone
            async with rig.http.post(rig.url + "/v1/messages", json=msg, headers=rig.auth) as r:
                assert r.status == 503, await r.text()
                assert int(r.headers["Retry-After"]) >= 1
                assert (await r.json())["type"] == "error"
            body = {"model": "m", "input": "x"}
            async with rig.http.post(rig.url + "/v1/responses", json=body, headers=rig.auth) as r:
                assert r.status == 503, await r.text()
                assert_openai_error(await r.json(), "model_unavailable")
            if peer is not None:
                await peer.drop()
                await wait_for(lambda: len(rig.state.registry) == 0)
                peer = None
        older = await rig.peer()  # a server without the Messages API still gets the 400
        async with rig.http.post(rig.url + "/v1/messages", json=msg, headers=rig.auth) as r:
            assert r.status == 400
            assert "missing endpoint capability" in (await r.json())["error"]["message"]
        await older.drop()
