"""Routing across connectors: least loaded, limits, retries before the first byte, the fair
queue and its timeout, replacement of a stale connection."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import openai
import pytest

from broker_rig import Rig, assert_openai_error, read_sse, running_broker, wait_for
from connector_peer import PeerStream, fail_with, serve_sse, stall
from remotellm_protocol import CloseCode, ErrorCode, GoAway

STREAM = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path, queue_timeout_s=0.5) as rig:
        yield rig


async def _start_streams(rig: Rig, n: int, key: str | None = None) -> list[asyncio.Task[list[str]]]:
    async def one() -> list[str]:
        headers = {"Authorization": f"Bearer {key or rig.key}"}
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=headers
        ) as resp:
            return await read_sse(resp)

    return [asyncio.create_task(one()) for _ in range(n)]


async def test_requests_spread_to_the_least_loaded_connector(rig: Rig) -> None:
    a = await rig.peer(name="a", script=stall, max_streams=4)
    b = await rig.peer(name="b", script=stall, max_streams=4)
    tasks = await _start_streams(rig, 4)
    await wait_for(lambda: len(a.opens) + len(b.opens) == 4)
    assert (len(a.opens), len(b.opens)) == (2, 2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_connector_never_gets_more_than_its_max_streams(rig: Rig) -> None:
    live = {"now": 0, "peak": 0}

    async def counting(stream: PeerStream) -> None:
        live["now"] += 1
        live["peak"] = max(live["peak"], live["now"])
        try:
            await serve_sse(2, gap=0.02)(stream)
        finally:
            live["now"] -= 1

    await rig.peer(script=counting, max_streams=2)
    results = await asyncio.gather(*await _start_streams(rig, 6))
    assert all(lines[-1] == "data: [DONE]" for lines in results)
    assert live["peak"] == 2


async def test_a_connector_vanishing_before_the_first_byte_is_retried_elsewhere(rig: Rig) -> None:
    async def vanish(stream: PeerStream) -> None:
        await stream.peer.drop()

    a = await rig.peer(name="a", script=vanish)
    b = await rig.peer(name="b", script=serve_sse(3))
    # Both idle: the first registered wins the tie, vanishes, and the request moves to "b".
    stream = await rig.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert [c.choices[0].delta.content async for c in stream] == ["tok0 ", "tok1 ", "tok2 "]
    assert (len(a.opens), len(b.opens)) == (1, 1)


@pytest.mark.parametrize("stream", [True, False])
async def test_a_connector_lost_after_head_but_before_any_body_byte_is_retried(
    rig: Rig, stream: bool
) -> None:
    async def head_then_vanish(s: PeerStream) -> None:
        await s.head(200, [("content-type", "text/event-stream")])
        await asyncio.sleep(0.1)  # the prefill: no body byte yet
        await s.peer.drop()

    a = await rig.peer(name="a", script=head_then_vanish)
    b = await rig.peer(name="b", script=serve_sse(2))
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json={**STREAM, "stream": stream}, headers=rig.auth
    ) as resp:
        assert resp.status == 200
        lines = await read_sse(resp)
    assert lines[-1] == "data: [DONE]"
    assert (len(a.opens), len(b.opens)) == (1, 1)


async def test_overloaded_and_going_away_answers_are_retried_on_another_connector(rig: Rig) -> None:
    a = await rig.peer(name="a", script=fail_with(ErrorCode.OVERLOADED, retry_after=3))
    b = await rig.peer(name="b", script=fail_with(ErrorCode.GOING_AWAY))
    c = await rig.peer(name="c", script=serve_sse(1))
    for _ in range(3):
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
        ) as resp:
            lines = await read_sse(resp)
        assert lines[-1] == "data: [DONE]"
    assert len(c.opens) == 3
    assert len(a.opens) + len(b.opens) >= 2


async def test_overloaded_with_nowhere_else_to_go_is_503_with_retry_after(rig: Rig) -> None:
    await rig.peer(script=fail_with(ErrorCode.OVERLOADED, retry_after=3))
    with pytest.raises(openai.InternalServerError) as caught:
        await rig.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "3"


async def test_when_all_are_busy_the_queue_times_out_with_503_and_retry_after(rig: Rig) -> None:
    await rig.peer(script=stall, max_streams=1)
    held = await _start_streams(rig, 1)
    await wait_for(lambda: rig.state.in_flight == 1)
    started = time.monotonic()
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json={**STREAM, "stream": False}, headers=rig.auth
    ) as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert_openai_error(await resp.json(), "no_capacity")
    assert 0.4 < time.monotonic() - started < 1.5
    held[0].cancel()
    await asyncio.gather(*held, return_exceptions=True)


async def test_a_full_queue_refuses_at_once(tmp_path: Path) -> None:
    async with running_broker(tmp_path, queue_max=1, queue_timeout_s=5) as rig:
        await rig.peer(script=stall, max_streams=1)
        held = await _start_streams(rig, 2)  # one running, one queued
        await wait_for(lambda: len(rig.state.router.queue) == 1)
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
        ) as resp:
            assert resp.status == 503
            assert_openai_error(await resp.json(), "queue_full")
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)


async def test_queued_requests_are_served_fairly_across_keys(tmp_path: Path) -> None:
    async with running_broker(tmp_path, queue_timeout_s=10) as rig:
        bob = rig.store.add_user("bob")
        gate = asyncio.Event()

        async def gated(stream: PeerStream) -> None:
            await gate.wait()
            await serve_sse(1)(stream)

        peer = await rig.peer(script=gated, max_streams=1)
        first = await _start_streams(rig, 1)
        await wait_for(lambda: len(peer.opens) == 1)
        alice_burst = await _start_streams(rig, 4)
        await wait_for(lambda: len(rig.state.router.queue) == 4)
        bob_one = await _start_streams(rig, 1, key=bob)
        await wait_for(lambda: len(rig.state.router.queue) == 5)
        gate.set()
        await asyncio.gather(*first, *alice_burst, *bob_one)
        users = [opened.principal.user_id for opened in peer.opens]
        # alice's first request was running; of the queued ones, bob's goes second at the latest
        assert users.index("local:bob") <= 2


async def test_a_reconnecting_connector_replaces_its_stale_session_at_once(rig: Rig) -> None:
    old = await rig.peer(name="gpu", script=stall)
    tasks = await _start_streams(rig, 1)
    await wait_for(lambda: len(old.opens) == 1)
    new = await rig.peer(name="gpu", script=serve_sse(1))
    await wait_for(lambda: old.close_code is not None)
    assert old.close_code == CloseCode.REPLACED
    assert [c.session_id for c in rig.state.registry] == [
        new.welcome.session_id if new.welcome else ""
    ]
    # the stalled stream of the stale session had sent nothing: it is retried on the new one
    lines = await tasks[0]
    assert lines[-1] == "data: [DONE]"
    assert len(new.opens) == 1


async def test_a_connector_that_sent_goaway_gets_no_new_streams(rig: Rig) -> None:
    a = await rig.peer(name="a", script=serve_sse(1))
    b = await rig.peer(name="b", script=serve_sse(1))
    await a.send(GoAway(reason="restarting"))
    await wait_for(lambda: not next(c for c in rig.state.registry if c.name == "a").accepting)
    for task in await _start_streams(rig, 3):
        await task
    assert (len(a.opens), len(b.opens)) == (0, 3)


async def test_models_frames_update_routing_and_listing(rig: Rig) -> None:
    peer = await rig.peer(models=["m"], script=serve_sse(1))
    await peer.announce(["m", "new-model"])
    await wait_for(lambda: rig.state.registry.model("new-model") is not None)
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json={**STREAM, "model": "new-model"}, headers=rig.auth
    ) as resp:
        assert resp.status == 200
        await resp.read()
    async with (
        aiohttp.ClientSession() as http,
        http.get(rig.url + "/v1/models", headers=rig.auth) as resp,
    ):
        ids = [m["id"] for m in (await resp.json())["data"]]
    assert ids == ["m", "new-model"]
