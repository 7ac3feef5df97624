"""One connector's link, without a server: what the broker sends goes through the link's
writer into a real ``ConnectorSession`` (which checks every frame as a connector would), and
what the connector sends is fed back in as the relay endpoint does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from broker_rig import wait_for
from remotellm_broker.channel import LOST, Channel
from remotellm_broker.link import ConnectorLink, LinkGone
from remotellm_protocol import (
    BODY_CHUNK_BYTES,
    Body,
    Cancel,
    CancelReason,
    Credit,
    Data,
    End,
    Frame,
    GoAway,
    Head,
    ModelInfo,
    Models,
    Open,
    Principal,
)
from remotellm_protocol.testing import SessionPair

PRINCIPAL = Principal(user_id="local:alice", key_id="k-1")


class Wire:
    """The connector's end of the WebSocket; ``gate`` cleared holds the link's writer."""

    def __init__(self, pair: SessionPair) -> None:
        self.pair = pair
        self.frames: list[Frame] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_bytes(self, data: bytes) -> None:
        await self.gate.wait()
        self.frames.append(self.pair.connector.receive(data))

    def of(self, kind: type[Any]) -> list[Any]:
        return [f for f in self.frames if isinstance(f, kind)]


@dataclass
class Rig:
    link: ConnectorLink
    wire: Wire
    pair: SessionPair
    released: list[ConnectorLink] = field(default_factory=list)
    announced: list[list[ModelInfo]] = field(default_factory=list)

    def open(self, channel: Channel, body: bytes = b"{}") -> int:
        return self.link.open(
            channel,
            correlation_id="req-1",
            method="POST",
            path="/v1/chat/completions",
            principal=PRINCIPAL,
            headers=[("content-type", "application/json")],
            deadline_ms=None,
            body=body,
        )

    async def opened(self, channel: Channel, body: bytes = b"{}") -> int:
        """``open`` a stream and wait until the connector has received it."""
        stream_id = self.open(channel, body)
        await wait_for(lambda: stream_id in self.pair.connector.streams)
        return stream_id

    def connector_sends(self, frame: Frame) -> None:
        self.link.feed(self.pair.connector.send(frame))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    pair = SessionPair.handshaken(models=[ModelInfo(id="m")], max_streams=4)
    wire = Wire(pair)
    released: list[ConnectorLink] = []
    announced: list[list[ModelInfo]] = []

    def on_models(link: ConnectorLink, models: Sequence[ModelInfo]) -> None:
        announced.append(list(models))

    assert pair.broker.hello is not None
    link = ConnectorLink(
        ws=wire,  # type: ignore[arg-type]
        session=pair.broker,
        hello=pair.broker.hello,
        session_id="s-test",
        on_release=released.append,
        on_models=on_models,
    )
    writer = asyncio.create_task(link.run_writer())
    yield Rig(link, wire, pair, released, announced)
    wire.gate.set()
    link.lost()
    await asyncio.wait_for(writer, 5)


async def test_open_sends_the_first_piece_of_the_body_and_send_body_the_rest_in_order(
    rig: Rig,
) -> None:
    body = bytes(range(256)) * (BODY_CHUNK_BYTES * 5 // 2 // 256)
    stream_id = rig.open(Channel(), body)
    await rig.link.send_body(stream_id, body)
    await wait_for(lambda: any(isinstance(f, Body) and f.last for f in rig.wire.frames))
    (opened,) = rig.wire.of(Open)
    assert (opened.stream, opened.more_body) == (stream_id, True)
    assert opened.body == body[:BODY_CHUNK_BYTES]
    pieces = rig.wire.of(Body)
    assert [p.last for p in pieces] == [False, True]
    assert opened.body + b"".join(p.chunk for p in pieces) == body


async def test_a_small_body_travels_whole_in_the_open(rig: Rig) -> None:
    stream_id = rig.open(Channel(), b'{"model": "m"}')
    await rig.link.send_body(stream_id, b'{"model": "m"}')
    await wait_for(lambda: rig.wire.frames)
    (opened,) = rig.wire.frames
    assert isinstance(opened, Open)
    assert (opened.body, opened.more_body) == (b'{"model": "m"}', False)
    assert rig.wire.of(Body) == []


async def test_frames_from_the_connector_reach_the_stream_and_end_releases_its_slot(
    rig: Rig,
) -> None:
    channel = Channel()
    stream_id = await rig.opened(channel)
    head = Head(stream=stream_id, status=200)
    rig.connector_sends(head)
    rig.connector_sends(Data(stream=stream_id, chunk=b"hello "))
    rig.connector_sends(Data(stream=stream_id, chunk=b"world"))
    assert rig.released == []
    rig.connector_sends(End(stream=stream_id))
    assert rig.released == [rig.link]
    got = [await channel.get() for _ in range(4)]
    assert got[0] == head
    assert [item.chunk for item in got[1:3] if isinstance(item, Data)] == [b"hello ", b"world"]
    assert isinstance(got[3], End)


async def test_chunks_that_arrive_together_reach_a_sink_in_one_write_after_the_batch(
    rig: Rig,
) -> None:
    channel = Channel()
    writes: list[bytes] = []
    channel.sink = lambda chunk: writes.append(chunk) is None
    stream_id = await rig.opened(channel)
    rig.connector_sends(Head(stream=stream_id, status=200))
    assert await channel.get() == Head(stream=stream_id, status=200)
    for part in (b"a", b"b", b"c"):
        rig.connector_sends(Data(stream=stream_id, chunk=part))
    assert writes == []  # flushed once per batch of frames, not per chunk
    await asyncio.sleep(0)
    assert writes == [b"abc"]


async def test_a_detached_stream_drops_its_frames_but_holds_its_slot_until_end(rig: Rig) -> None:
    channel = Channel()
    stream_id = await rig.opened(channel)
    rig.link.detach(stream_id)
    rig.connector_sends(Head(stream=stream_id, status=200))
    rig.connector_sends(Data(stream=stream_id, chunk=b"nobody reads this"))
    await asyncio.sleep(0)
    assert len(channel) == 0
    assert rig.released == []
    rig.connector_sends(End(stream=stream_id))
    assert rig.released == [rig.link]
    assert len(channel) == 0


async def test_a_lost_connection_ends_every_stream_with_lost_once(rig: Rig) -> None:
    first, second = Channel(), Channel()
    rig.open(first)
    detached = rig.open(second)
    rig.link.detach(detached)
    rig.link.lost()
    rig.link.lost()  # idempotent
    assert await first.get() is LOST
    assert len(second) == 0
    assert rig.released == [rig.link, rig.link]  # one release per open stream
    assert rig.link.closed
    assert not rig.link.has_room
    with pytest.raises(LinkGone):
        rig.open(Channel())


async def test_after_goaway_from_either_side_no_stream_opens(rig: Rig) -> None:
    rig.link.go_away("restarting")
    rig.link.go_away("again")  # one goaway on the wire, not two
    await wait_for(lambda: rig.wire.frames)
    assert [f.reason for f in rig.wire.of(GoAway)] == ["restarting"]
    with pytest.raises(LinkGone):
        rig.open(Channel())

    other = SessionPair.handshaken(models=[ModelInfo(id="m")])
    assert other.broker.hello is not None
    link = ConnectorLink(
        ws=Wire(other),  # type: ignore[arg-type]
        session=other.broker,
        hello=other.broker.hello,
        session_id="s-2",
        on_release=lambda link: None,
        on_models=lambda link, models: None,
    )
    link.feed(other.connector.send(GoAway(reason="connector draining")))
    assert not link.accepting
    with pytest.raises(LinkGone):
        link.open(
            Channel(),
            correlation_id="req-2",
            method="POST",
            path="/v1/chat/completions",
            principal=PRINCIPAL,
            headers=[],
            deadline_ms=None,
            body=b"{}",
        )


async def test_cancel_is_sent_once_and_not_after_the_stream_ended(rig: Rig) -> None:
    stream_id = await rig.opened(Channel())
    rig.link.cancel(stream_id, CancelReason.CLIENT_GONE)
    rig.link.cancel(stream_id, CancelReason.CLIENT_GONE)
    other = await rig.opened(Channel())
    rig.connector_sends(Head(stream=other, status=200))
    rig.connector_sends(End(stream=other))
    rig.link.cancel(other, CancelReason.DEADLINE)  # already ended: nothing to send
    await wait_for(lambda: len(rig.wire.frames) >= 3)
    await asyncio.sleep(0)
    cancels = rig.wire.of(Cancel)
    assert [(c.stream, c.reason) for c in cancels] == [(stream_id, CancelReason.CLIENT_GONE)]


async def test_acknowledged_bytes_are_credited_in_batches(rig: Rig) -> None:
    stream_id = await rig.opened(Channel())
    quarter = rig.pair.broker.window // 4
    rig.connector_sends(Head(stream=stream_id, status=200))
    rig.connector_sends(Data(stream=stream_id, chunk=b"x" * quarter))
    rig.link.acknowledge(stream_id, quarter - 1)  # under a quarter window: no frame yet
    rig.link.acknowledge(stream_id, 1)
    await wait_for(lambda: rig.wire.of(Credit))
    (credit,) = rig.wire.of(Credit)
    assert (credit.stream, credit.delivered) == (stream_id, quarter)


async def test_a_model_list_from_the_connector_is_announced(rig: Rig) -> None:
    rig.connector_sends(Models(models=[ModelInfo(id="m"), ModelInfo(id="n")]))
    assert [[m.id for m in models] for models in rig.announced] == [["m", "n"]]


async def test_a_large_upload_waits_for_the_writer_and_stops_when_cancelled(rig: Rig) -> None:
    body = b"b" * (BODY_CHUNK_BYTES * 32)  # 8 MiB
    rig.wire.gate.clear()  # the connector's socket takes nothing for now
    stream_id = rig.open(Channel(), body)
    upload = asyncio.create_task(rig.link.send_body(stream_id, body))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not upload.done()  # paced on the writer queue, not all 8 MiB queued at once
    rig.link.cancel(stream_id, CancelReason.CLIENT_GONE)
    rig.wire.gate.set()
    await asyncio.wait_for(upload, 5)
    await wait_for(lambda: rig.wire.of(Cancel))
    pieces = rig.wire.of(Body)
    assert 0 < len(pieces) < 8  # about a megabyte went out before the cancel, not 8 MiB
    assert isinstance(rig.wire.frames[-1], Cancel)
