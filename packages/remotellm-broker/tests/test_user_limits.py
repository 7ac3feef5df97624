"""Rate limits and the concurrent-stream cap belong to the user, not the key: rotating the key
(as anyone with a portal session can, as often as they like) must not refill the bucket or
free the slots. Before, each rotation started a fresh bucket: 369 requests in 5 s at 6/min."""

from __future__ import annotations

import asyncio
from pathlib import Path

from broker_rig import assert_openai_error, running_broker, wait_for
from connector_peer import serve_sse, stall

STREAM = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


async def test_rotating_the_key_does_not_refill_the_rate_limit_bucket(tmp_path: Path) -> None:
    async with running_broker(tmp_path, rate_limit_rpm=6, rate_limit_burst=2) as rig:
        await rig.peer(script=serve_sse(1))
        key = rig.key
        statuses = []
        for _ in range(6):
            async with rig.http.post(
                rig.url + "/v1/chat/completions",
                json=STREAM,
                headers={"Authorization": f"Bearer {key}"},
            ) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert_openai_error(await resp.json(), "rate_limit_exceeded")
                await resp.read()
            key = await asyncio.to_thread(rig.store.rotate, "alice")  # a fresh key every time
        assert statuses[:2] == [200, 200]
        assert statuses[2:] == [429] * 4


async def test_rotating_the_key_does_not_free_the_users_stream_slots(tmp_path: Path) -> None:
    async with running_broker(tmp_path, max_streams_per_key=1) as rig:
        peer = await rig.peer(script=stall)

        async def hold(key: str) -> None:
            async with rig.http.post(
                rig.url + "/v1/chat/completions",
                json=STREAM,
                headers={"Authorization": f"Bearer {key}"},
            ) as resp:
                await resp.read()

        first = asyncio.create_task(hold(rig.key))
        await wait_for(lambda: len(peer.opens) == 1)
        new_key = await asyncio.to_thread(rig.store.rotate, "alice")
        async with rig.http.post(
            rig.url + "/v1/chat/completions",
            json=STREAM,
            headers={"Authorization": f"Bearer {new_key}"},
        ) as resp:
            assert resp.status == 429
            body = await resp.json()
            assert_openai_error(body, "too_many_concurrent_requests")
            assert "per user" in body["error"]["message"]
        assert len(peer.opens) == 1
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)


async def test_two_users_keep_separate_buckets(tmp_path: Path) -> None:
    async with running_broker(tmp_path, rate_limit_rpm=6, rate_limit_burst=1) as rig:
        await rig.peer(script=serve_sse(1))
        bob = await asyncio.to_thread(rig.store.add_user, "bob")
        for key, expected in ((rig.key, 200), (rig.key, 429), (bob, 200), (bob, 429)):
            async with rig.http.post(
                rig.url + "/v1/chat/completions",
                json=STREAM,
                headers={"Authorization": f"Bearer {key}"},
            ) as resp:
                assert resp.status == expected
                await resp.read()
