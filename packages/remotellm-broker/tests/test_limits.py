"""Keys and limits at the API: 401/403, the request rate limit, concurrent streams per key,
and users blocked while their streams run."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import openai
import pytest

from broker_rig import assert_openai_error, read_sse, running_broker, wait_for
from connector_peer import serve_sse, stall
from remotellm_protocol import CancelReason

CHAT = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
STREAM = {**CHAT, "stream": True}


async def test_unknown_key_is_401_and_blocked_user_is_403(tmp_path: Path) -> None:
    async with running_broker(tmp_path) as rig:
        await rig.peer()
        with pytest.raises(openai.AuthenticationError) as caught:
            await rig.client(api_key="sk-" + "0" * 32).chat.completions.create(**CHAT)  # type: ignore[call-overload]
        assert caught.value.code == "invalid_api_key"
        assert "sk-000" not in caught.value.message
        rig.store.block("alice")
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await rig.client().chat.completions.create(**CHAT)  # type: ignore[call-overload]
        assert denied.value.code == "user_blocked"


async def test_rate_limit_is_429_with_retry_after_and_ratelimit_headers(tmp_path: Path) -> None:
    async with running_broker(tmp_path, rate_limit_rpm=60, rate_limit_burst=2) as rig:
        await rig.peer(script=serve_sse(1))
        for remaining in (1, 0):
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
            ) as resp:
                assert resp.status == 200
                assert resp.headers["x-ratelimit-limit-requests"] == "2"
                assert resp.headers["x-ratelimit-remaining-requests"] == str(remaining)
                await resp.read()
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
        ) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            assert resp.headers["x-ratelimit-limit-requests"] == "2"
            assert resp.headers["x-ratelimit-remaining-requests"] == "0"
            assert resp.headers["x-ratelimit-reset-requests"]
            assert_openai_error(await resp.json(), "rate_limit_exceeded")
        with pytest.raises(openai.RateLimitError):
            await rig.client().chat.completions.create(**CHAT)  # type: ignore[call-overload]
        async with rig.http.get(rig.health_url + "/metrics") as resp:
            assert 'remotellm_broker_rate_limited_total{limit="requests"} 2.0' in await resp.text()


async def test_per_user_override_beats_the_default_limit(tmp_path: Path) -> None:
    async with running_broker(tmp_path, rate_limit_rpm=60, rate_limit_burst=1) as rig:
        rig.store.set_limits("alice", rate_limit_rpm=0, rate_limit_burst=0, max_streams=None)
        await wait_for(
            lambda: (i := rig.store.authenticate(rig.key)) is not None and i.rate_limit_rpm == 0
        )
        await rig.peer(script=serve_sse(1))
        for _ in range(3):
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
            ) as resp:
                assert resp.status == 200
                await resp.read()


async def test_concurrent_streams_per_key_are_capped_and_freed_when_clients_leave(
    tmp_path: Path,
) -> None:
    async with running_broker(tmp_path, max_streams_per_key=1) as rig:
        peer = await rig.peer(script=stall)

        async def hold() -> None:
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
            ) as resp:
                await resp.read()

        first = asyncio.create_task(hold())
        await wait_for(lambda: len(peer.opens) == 1)
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
        ) as resp:
            assert resp.status == 429
            assert_openai_error(await resp.json(), "too_many_concurrent_requests")
            assert resp.headers["Retry-After"]
        first.cancel()  # the client leaves: its slot must come back
        await asyncio.gather(first, return_exceptions=True)
        await wait_for(lambda: rig.state.in_flight == 0)
        peer.script = serve_sse(1)
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
        ) as resp:
            assert resp.status == 200
            await resp.read()


@pytest.mark.parametrize("cap_before", [0, 64], ids=["unlimited", "64"])
async def test_a_stream_cap_lowered_below_the_running_streams_admits_none_until_below_it(
    tmp_path: Path, cap_before: int
) -> None:
    async with running_broker(tmp_path, max_streams_per_key=cap_before, queue_max=64) as rig:
        peer = await rig.peer(script=stall, max_streams=64)

        async def hold() -> int:
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
            ) as resp:
                await resp.read()
                return resp.status

        running = [asyncio.create_task(hold()) for _ in range(10)]
        await wait_for(lambda: len(peer.opens) == 10)
        rig.store.set_limits("alice", rate_limit_rpm=None, rate_limit_burst=None, max_streams=5)
        statuses = []
        for _ in range(5):
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
            ) as resp:
                statuses.append(resp.status)
        assert statuses == [429] * 5
        assert len(peer.opens) == 10
        for task in running[:6]:  # 4 left: one below the new cap
            task.cancel()
        await asyncio.gather(*running[:6], return_exceptions=True)
        await wait_for(lambda: rig.state.in_flight == 4)
        admitted = asyncio.create_task(hold())
        await wait_for(lambda: len(peer.opens) == 11)
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
        ) as resp:
            assert resp.status == 429  # 5 running again: the cap holds
        for task in [*running[6:], admitted]:
            task.cancel()
        await asyncio.gather(*running[6:], admitted, return_exceptions=True)


async def test_blocking_a_user_ends_their_open_streams_within_a_second(tmp_path: Path) -> None:
    async with running_broker(tmp_path, keepalive_interval_s=0.1) as rig:
        bob = rig.store.add_user("bob")
        peer = await rig.peer(script=stall)

        async def stream(key: str) -> list[str]:
            headers = {"Authorization": f"Bearer {key}"}
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=STREAM, headers=headers
            ) as resp:
                return await read_sse(resp)

        alice_task = asyncio.create_task(stream(rig.key))
        bob_task = asyncio.create_task(stream(bob))
        await wait_for(lambda: len(peer.opens) == 2)
        # Block through another writer of the file, as the CLI would.
        other = type(rig.store)(rig.store.path)
        blocked_at = time.monotonic()
        other.block("alice")
        lines = await asyncio.wait_for(alice_task, 2)
        assert time.monotonic() - blocked_at < 1.0
        assert lines[-2] == "event: error"
        assert_openai_error(json.loads(lines[-1].removeprefix("data: ")), "user_blocked")
        assert "data: [DONE]" not in lines
        reasons = [reason for _, reason, _ in peer.cancels]
        assert reasons == [CancelReason.USER_BLOCKED]
        assert not bob_task.done()
        bob_task.cancel()
        await asyncio.gather(bob_task, return_exceptions=True)
