"""A model server that goes silent mid-stream: keep-alives keep the client's connection alive
between events, and past ``stall_timeout_s`` the stream ends with an SSE error event and the
upstream request is cancelled (issue 15 §3)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from broker_rig import Rig, running_broker, wait_for
from connector_peer import PeerStream, sse_chunks
from remotellm_protocol import CancelReason

STREAM = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


async def _raw_stream(rig: Rig) -> bytes:
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
    ) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_a_stream_silent_mid_answer_gets_keepalives_then_an_error_and_a_cancel(
    tmp_path: Path,
) -> None:
    async def stalls_after_two_tokens(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        for chunk in sse_chunks(2, done=False):
            await stream.data(chunk)
        await asyncio.Event().wait()  # the GPU hangs

    async with running_broker(tmp_path, keepalive_interval_s=0.1, stall_timeout_s=0.8) as rig:
        peer = await rig.peer(script=stalls_after_two_tokens)
        body = await asyncio.wait_for(_raw_stream(rig), 10)
        text = body.decode()
        head, _, rest = text.partition(": keep-alive\n\n")
        assert head == b"".join(sse_chunks(2, done=False)).decode()  # tokens came first
        assert rest.count(": keep-alive\n\n") >= 2  # the client heard from us while it waited
        assert "event: error" in rest
        error = json.loads(rest.split("data: ", 1)[1].split("\n", 1)[0])["error"]
        assert error["code"] == "upstream_stalled"
        assert "[DONE]" not in text
        await wait_for(lambda: len(peer.cancels) == 1)
        assert peer.cancels[0][1] is CancelReason.DEADLINE
        await wait_for(lambda: rig.state.in_flight == 0)


async def test_a_keepalive_never_lands_inside_an_event(tmp_path: Path) -> None:
    async def pauses_mid_event(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        await stream.data(b'data: {"choices":[{"delta":{"content":"he')
        await asyncio.sleep(0.6)  # six keep-alive periods inside one event
        await stream.data(b'llo"}}]}\n\n')
        await stream.data(b"data: [DONE]\n\n")
        await stream.end()

    async with running_broker(tmp_path, keepalive_interval_s=0.1, stall_timeout_s=5.0) as rig:
        await rig.peer(script=pauses_mid_event)
        body = await asyncio.wait_for(_raw_stream(rig), 10)
        assert body == b'data: {"choices":[{"delta":{"content":"hello"}}]}\n\ndata: [DONE]\n\n'


async def test_a_steady_stream_gets_no_keepalives_and_is_never_cut(tmp_path: Path) -> None:
    async def steady(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        for chunk in sse_chunks(12):
            await asyncio.sleep(0.05)
            await stream.data(chunk)
        await stream.end()

    async with running_broker(tmp_path, keepalive_interval_s=0.2, stall_timeout_s=0.3) as rig:
        await rig.peer(script=steady)
        body = await asyncio.wait_for(_raw_stream(rig), 10)
        assert body == b"".join(sse_chunks(12))
