"""Streaming behaviour: keep-alives, client disconnects, slow clients, connector loss."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import openai
import pytest

from broker_rig import Rig, assert_openai_error, read_sse, running_broker, wait_for
from connector_peer import PeerStream, serve_sse, sse_chunks, stall
from remotellm_protocol import CancelReason, Data, Usage

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**CHAT, "stream": True}


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path, keepalive_interval_s=0.1, stream_window=64 * 1024) as rig:
        yield rig


def slow_prefill(delay: float, n: int = 2):  # type: ignore[no-untyped-def]
    async def script(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        await asyncio.sleep(delay)
        for chunk in sse_chunks(n):
            await stream.data(chunk)
        await stream.end(usage=Usage())

    return script


async def test_headers_go_out_at_once_and_keep_alives_flow_during_prefill(rig: Rig) -> None:
    await rig.peer(script=slow_prefill(0.45))
    started = time.monotonic()
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
    ) as resp:
        headers_after = time.monotonic() - started
        lines = await read_sse(resp)
    assert headers_after < 0.3
    comments = [line for line in lines if line.startswith(":")]
    assert comments == [": keep-alive"] * len(comments)
    assert 3 <= len(comments) <= 5
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert all(line.startswith(":") for line in lines[:first_data])
    assert not any(line.startswith(":") for line in lines[first_data:])
    assert lines[-1] == "data: [DONE]"


async def test_without_an_answer_the_headers_go_out_with_the_first_keep_alive(rig: Rig) -> None:
    async def no_head_yet(stream: PeerStream) -> None:
        await asyncio.sleep(0.35)
        await serve_sse(1)(stream)

    await rig.peer(script=no_head_yet)
    started = time.monotonic()
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
    ) as resp:
        assert 0.05 < time.monotonic() - started < 0.3
        assert resp.status == 200
        lines = await read_sse(resp)
    assert lines[0] == ": keep-alive"
    assert lines[-1] == "data: [DONE]"


async def test_keep_alives_do_not_confuse_the_openai_sdk(rig: Rig) -> None:
    await rig.peer(script=slow_prefill(0.25, n=3))
    stream = await rig.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert [c.choices[0].delta.content async for c in stream] == ["tok0 ", "tok1 ", "tok2 "]


async def _cancel_arrives(rig: Rig, body: dict[str, object], script, after: float) -> float:  # type: ignore[no-untyped-def]
    peer = await rig.peer(script=script)

    async def client() -> None:
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=body, headers=rig.auth
        ) as resp:
            await resp.read()

    task = asyncio.create_task(client())
    await asyncio.wait_for(peer.opened.wait(), 5)
    await asyncio.sleep(after)
    gone_at = time.monotonic()
    task.cancel()  # the client disconnects
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: bool(peer.cancels), within=2)
    stream_id, reason, at = peer.cancels[0]
    assert reason is CancelReason.CLIENT_GONE
    assert stream_id == peer.opens[0].stream
    identity = rig.store.authenticate(rig.key)
    assert identity is not None
    await wait_for(lambda: rig.state.slots.active(identity.key_id) == 0, within=1)
    await wait_for(lambda: rig.state.in_flight == 0, within=1)
    return at - gone_at


async def test_client_gone_during_prefill_cancels_within_500ms(rig: Rig) -> None:
    assert await _cancel_arrives(rig, STREAM, stall, after=0.15) < 0.5


async def test_client_gone_during_prefill_of_a_plain_request_cancels_too(rig: Rig) -> None:
    assert await _cancel_arrives(rig, CHAT, stall, after=0.15) < 0.5


async def test_client_gone_mid_stream_cancels_within_500ms(rig: Rig) -> None:
    async def endless(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        for chunk in sse_chunks(100_000, done=False):
            await stream.data(chunk)
            await asyncio.sleep(0.005)

    peer = await rig.peer(script=endless)
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
    ) as resp:
        await resp.content.readline()
        gone_at = time.monotonic()
        resp.close()  # drop the connection mid-stream
    await wait_for(lambda: bool(peer.cancels), within=2)
    assert peer.cancels[0][1] is CancelReason.CLIENT_GONE
    assert peer.cancels[0][2] - gone_at < 0.5
    await wait_for(lambda: rig.state.in_flight == 0, within=1)
    async with rig.http.get(rig.health_url + "/metrics") as metrics:
        assert 'remotellm_broker_requests_total{model="m",status="499"} 1.0' in await metrics.text()


async def _raw_client(
    rig: Rig, request_id: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a small, fixed receive buffer that reads only when told to."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (rig.bound.host, rig.bound.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    body = json.dumps(STREAM).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {rig.key}\r\nX-Request-ID: {request_id}\r\n".encode()
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return reader, writer


async def test_a_slow_client_holds_one_window_and_does_not_slow_other_streams(rig: Rig) -> None:
    window = rig.settings.stream_window
    total = 16 * 1024 * 1024
    sent = {"bytes": 0}

    async def script(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        if stream.open.correlation_id != "slow":
            for chunk in sse_chunks(20):
                await stream.data(chunk)
        else:
            piece = b"data: " + b"x" * 16_000 + b"\n\n"
            while sent["bytes"] < total:
                await stream.data(piece)
                sent["bytes"] += len(piece)
        await stream.end()

    peer = await rig.peer(script=script)
    reader, writer = await _raw_client(rig, "slow")
    try:
        # The slow client reads nothing: the connector stalls once one window is unacknowledged
        # and the socket buffers are full, instead of pushing 16 MiB into the broker.
        await wait_for(lambda: sent["bytes"] > 0)
        stalled_at = -1
        while stalled_at != sent["bytes"]:
            stalled_at = sent["bytes"]
            await asyncio.sleep(0.3)
        assert stalled_at < 6 * 1024 * 1024  # window + transport buffer + kernel buffers
        slow = peer.session.streams[peer.opens[0].stream]
        assert slow.sent - slow.credited <= window
        link = next(iter(rig.state.registry))
        buffered = link._streams[slow.id]  # the broker's per-stream queue: at most one window
        assert buffered is not None
        assert sum(len(getattr(item, "chunk", b"")) for item in buffered._items) <= window

        # Another stream on the same connector goes through at full speed meanwhile.
        started = time.monotonic()
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
        ) as fast:
            lines = await read_sse(fast)
        assert time.monotonic() - started < 0.5
        assert lines[-1] == "data: [DONE]"

        received = 0
        while chunk := await reader.read(1 << 20):
            received += len(chunk)
        assert received >= total
    finally:
        writer.close()
        await writer.wait_closed()


async def test_connector_lost_mid_stream_ends_with_an_error_event_and_no_done(rig: Rig) -> None:
    async def dies(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        for chunk in sse_chunks(2, done=False):
            await stream.data(chunk)
        await asyncio.sleep(0.05)
        await stream.peer.drop()

    await rig.peer(script=dies)
    started = time.monotonic()
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
    ) as resp:
        lines = await read_sse(resp)
    assert time.monotonic() - started < 2
    assert "data: [DONE]" not in lines
    assert lines[-2] == "event: error"
    assert_openai_error(json.loads(lines[-1].removeprefix("data: ")), "upstream_interrupted")
    assert len([line for line in lines if line.startswith('data: {"id"')]) == 2


async def test_connector_lost_mid_stream_raises_in_the_openai_sdk(rig: Rig) -> None:
    async def dies(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        await stream.data(sse_chunks(1, done=False)[0])
        await asyncio.sleep(0.05)
        await stream.peer.drop()

    await rig.peer(script=dies)
    stream = await rig.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    got: list[str | None] = []

    async def consume() -> None:
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content)

    with pytest.raises(openai.APIError, match="broke off"):
        await consume()
    assert got == ["tok0 "]


async def test_a_hung_connector_is_noticed_by_heartbeat_and_its_streams_end(tmp_path: Path) -> None:
    async with running_broker(tmp_path, heartbeat_s=0.2) as rig:

        async def hangs(stream: PeerStream) -> None:
            await stream.head(200, [("content-type", "text/event-stream")])
            await stream.data(sse_chunks(1, done=False)[0])
            stream.peer.go_silent()
            await asyncio.Event().wait()

        await rig.peer(script=hangs)
        started = time.monotonic()
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
        ) as resp:
            lines = await read_sse(resp)
        assert time.monotonic() - started < 2
        assert lines[-2] == "event: error"
        assert "data: [DONE]" not in lines
        await wait_for(lambda: len(rig.state.registry) == 0)


async def test_an_empty_data_frame_mid_stream_does_not_end_the_response(rig: Rig) -> None:
    # An empty chunk written with HTTP/1.1 chunked framing is the terminating "0\r\n\r\n":
    # the client would see a complete-looking body cut short before [DONE].
    async def with_empty_chunks(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        chunks = sse_chunks(3)
        empty = Data(stream=stream.id, chunk=b"")  # stream.data() would skip it
        await stream.data(chunks[0])
        await asyncio.sleep(0.05)
        await stream.peer.send(empty)
        await asyncio.sleep(0.05)
        for chunk in chunks[1:]:
            await stream.peer.send(empty)
            await stream.data(chunk)
        await stream.end(usage=Usage())

    await rig.peer(script=with_empty_chunks)
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
    ) as resp:
        lines = await read_sse(resp)
    data = [line for line in lines if line.startswith("data:")]
    assert data[-1] == "data: [DONE]"
    assert len(data) == 4
