"""A legal request cannot cost many times its size (issue 11 item 4).

The budget is measured, not timed: peak traced memory (tracemalloc) while a 16 MiB body goes
from a client (another process, so its own buffers are not counted) through the broker to a
connector that keeps nothing, and the event loop's longest busy stretch measured in the loop
thread's CPU time (so a busy shared machine that preempts the process does not count as a
stall, but any step of the broker that holds the loop does).

The broker-wide budget of body bytes in flight answers 503 with ``Retry-After`` when full,
and frees a body's share as soon as the answer starts flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker_rig import Rig, assert_openai_error, read_sse, running_broker, wait_for
from connector_peer import ConnectorPeer, PeerStream, serve_sse
from remotellm_broker.bodies import ParsedBody, parse_body
from remotellm_broker.openai_errors import OpenAIError
from remotellm_protocol import Body, Frame

CHAT = "/v1/chat/completions"
MIB = 1024 * 1024
BODY_BYTES = 16 * MIB - 4096  # just under the default max_body_bytes, with room for headers

#: The client: another process, posting a valid chat body of exactly ``size`` bytes: a long
#: conversation of short messages with non-ASCII text (the shape that costs most to decode
#: into objects), then one long message that fills the rest. Prints the status it got.
CLIENT = r"""
import http.client, sys
host, port, key, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
head = b'{"model":"m","stream":true,"stream_options":{"x":1},"messages":['
short = '{"role":"user","content":"é€ab, a short turn"},'.encode()
last = b'{"role":"user","content":"'
tail = b'"}]}'
turns = (size // 2) // len(short)
fill = size - len(head) - turns * len(short) - len(last) - len(tail)
body = head + short * turns + last + b"x" * fill + tail
assert len(body) == size
conn = http.client.HTTPConnection(host, port, timeout=120)
conn.request("POST", "/v1/chat/completions", body=body,
             headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
resp = conn.getresponse()
print(resp.status, len(resp.read()))
"""


class CountingPeer(ConnectorPeer):
    """A connector that counts the body bytes it receives and keeps none of them."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.received = 0

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, Body):
            stream = self.streams[frame.stream]
            self.received += len(frame.chunk)
            if frame.last:
                stream.body_done.set()
            return
        super()._on_frame(frame)


@contextlib.asynccontextmanager
async def big_body_rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, CountingPeer]]:
    async with running_broker(tmp_path) as rig:
        peer = CountingPeer(rig.relay_url, rig.token, script=serve_sse(3))
        rig.peers.append(peer)
        await peer.connect()
        await wait_for(lambda: peer.name in {c.name for c in rig.state.registry})
        yield rig, peer


async def post_from_another_process(rig: Rig, size: int) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        rig.bound.host,
        str(rig.bound.port),
        rig.key,
        str(size),
        stdout=subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0
    return out.decode().strip()


@pytest.mark.slow
async def test_a_16_mib_body_costs_at_most_three_times_its_size(tmp_path: Path) -> None:
    async with big_body_rig(tmp_path) as (rig, peer):
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            answer = await post_from_another_process(rig, BODY_BYTES)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert answer.startswith("200 ")
        assert peer.received + len(peer.opens[0].body) == BODY_BYTES  # it all went through
        growth = peak - before
        print(f"peak growth {growth / MIB:.1f} MiB for a {BODY_BYTES / MIB:.1f} MiB body")
        assert growth <= 3 * BODY_BYTES, f"{growth / BODY_BYTES:.2f}x the body"
        assert rig.state.body_budget.used == 0


@pytest.mark.slow
async def test_a_16_mib_body_never_holds_the_event_loop_for_100_ms(tmp_path: Path) -> None:
    async with big_body_rig(tmp_path) as (rig, peer):
        longest = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal longest
            while not done.is_set():
                started = time.thread_time()
                await asyncio.sleep(0.002)
                longest = max(longest, time.thread_time() - started)

        tick = asyncio.create_task(ticker())
        try:
            answer = await post_from_another_process(rig, BODY_BYTES)
        finally:
            done.set()
            await tick
        assert answer.startswith("200 ")
        assert peer.received + len(peer.opens[0].body) == BODY_BYTES
        print(f"longest busy stretch of the loop: {longest * 1000:.1f} ms")
        assert longest < 0.100


# -- the broker-wide budget -------------------------------------------------------------------


def chat_body(size: int, **fields: Any) -> bytes:
    head = b'{"model":"m","messages":[{"role":"user","content":"'
    fill = b"x" * (size - len(head) - 4)
    return head + fill + b'"}]}'


async def test_bodies_over_the_in_flight_budget_get_503_with_retry_after(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def held(stream: PeerStream) -> None:
        await stream.head(200, [("Content-Type", "application/json")])
        await release.wait()  # no byte reaches the client: the body stays held
        await stream.data(b'{"ok":true}')
        await stream.end()

    async with running_broker(
        tmp_path, max_body_bytes=600_000, max_body_bytes_in_flight=1_000_000
    ) as rig:
        await rig.peer(script=held)

        async def post(data: Any) -> aiohttp.ClientResponse:
            return await rig.http.post(rig.url + CHAT, data=data, headers=rig.auth)

        first = asyncio.create_task(post(chat_body(500_000)))
        await wait_for(lambda: rig.state.body_budget.used == 500_000)

        refused = await post(chat_body(600_000))  # 1.1 MB would be in flight
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert_openai_error(await refused.json(), "server_busy")

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            body = chat_body(600_000)
            for offset in range(0, len(body), 50_000):
                yield body[offset : offset + 50_000]

        refused = await post(chunked())
        assert refused.status == 503
        assert_openai_error(await refused.json(), "server_busy")
        assert rig.state.body_budget.used == 500_000  # the refused ones gave their share back

        small = asyncio.create_task(post(chat_body(400_000)))  # still fits beside the first
        await wait_for(lambda: rig.state.body_budget.used == 900_000)
        release.set()
        for resp in (await first, await small):
            assert resp.status == 200
            assert await resp.json() == {"ok": True}
        assert rig.state.body_budget.used == 0


async def test_a_body_is_released_when_the_answer_starts(tmp_path: Path) -> None:
    async with running_broker(
        tmp_path, max_body_bytes=600_000, max_body_bytes_in_flight=600_000
    ) as rig:
        await rig.peer(script=serve_sse(200, gap=0.01))
        payload = chat_body(500_000).replace(b'"messages"', b'"stream":true,"messages"')
        async with rig.http.post(rig.url + CHAT, data=payload, headers=rig.auth) as streaming:
            assert streaming.status == 200
            await streaming.content.readline()  # the answer flows: the body is not needed
            assert rig.state.body_budget.used == 0
            async with rig.http.post(rig.url + CHAT, data=payload, headers=rig.auth) as second:
                assert second.status == 200
                lines = await read_sse(second)
                assert lines[-1] == "data: [DONE]"
            await read_sse(streaming)


# -- validation without building the document -------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"m","messages":[{"content":tru}]}',  # inside the raw ``messages``
        b'{"model":"m","messages":[{}],"tools":[{"a":1,}]}',  # inside a skipped field
        b'{"model":"m","messages":[{}],"x":"unterminated}',
        b'{"model":"m","messages":[{}]}{"again":1}',
    ],
)
def test_malformed_json_anywhere_in_a_skipped_part_is_still_a_400(raw: bytes) -> None:
    with pytest.raises(OpenAIError) as caught:
        parse_body(CHAT, raw)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_request"


def test_validation_reads_only_model_stream_and_the_kinds_of_the_big_fields() -> None:
    turns = b",".join([b'{"role":"user","content":"\xc3\xa9 a turn"}'] * 50_000)
    raw = b'{"stream":true,"messages":[' + turns + b'],"model":"m","stream_options":{}}'
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        parsed = parse_body(CHAT, raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed == ParsedBody(model="m", stream=True)
    assert peak - before < 64 * 1024  # not the 50,000 message objects: a few small values
