"""The channel between a connector's reader and a stream's request handler: order, the
direct-write fast path, and what happens when the client's socket cannot take a chunk."""

from __future__ import annotations

import asyncio

from remotellm_broker.channel import LOST, TICK, Channel, Cut
from remotellm_protocol import CancelReason, Data, End, Head


def data(chunk: bytes) -> Data:
    return Data(stream=1, chunk=chunk)


class Sink:
    """The client's socket as the handler's sink sees it: takes chunks while open."""

    def __init__(self, *, accepts: bool = True) -> None:
        self.accepts = accepts
        self.writes: list[bytes] = []

    def __call__(self, chunk: bytes) -> bool:
        if self.accepts:
            self.writes.append(chunk)
        return self.accepts


async def test_items_come_out_in_the_order_they_went_in() -> None:
    channel = Channel()
    head, end = Head(stream=1, status=200), End(stream=1)
    for item in (head, data(b"a"), TICK, data(b"b"), end, LOST):
        channel.push(item)
    assert len(channel) == 6
    got = [await channel.get() for _ in range(6)]
    assert got == [head, data(b"a"), TICK, data(b"b"), end, LOST]
    assert len(channel) == 0


async def test_get_waits_for_the_next_item_and_wakes_when_it_arrives() -> None:
    channel = Channel()
    getter = asyncio.create_task(channel.get())
    await asyncio.sleep(0)
    assert not getter.done()
    cut = Cut(CancelReason.DEADLINE)
    channel.push(cut)
    assert await asyncio.wait_for(getter, 5) is cut
    assert cut.reason is CancelReason.DEADLINE


async def test_without_a_sink_data_is_queued_for_the_handler() -> None:
    channel = Channel()
    assert channel.offer(data(b"x")) is False
    assert await channel.get() == data(b"x")


async def test_with_a_sink_chunks_are_staged_and_written_in_one_flush() -> None:
    channel, sink = Channel(), Sink()
    channel.sink = sink
    assert channel.offer(data(b"one ")) is True  # first staged chunk: caller schedules a flush
    assert channel.offer(data(b"two ")) is False
    assert channel.offer(data(b"three")) is False
    assert sink.writes == []  # nothing written before the flush
    channel.flush()
    assert sink.writes == [b"one two three"]
    assert len(channel) == 0
    channel.flush()  # nothing staged: nothing written
    assert sink.writes == [b"one two three"]


async def test_a_chunk_the_sink_refuses_is_queued_so_no_byte_is_lost() -> None:
    channel, sink = Channel(), Sink(accepts=False)
    channel.sink = sink
    channel.offer(data(b"ab"))
    channel.offer(data(b"cd"))
    channel.flush()
    assert await channel.get() == Data(stream=0, chunk=b"abcd")


async def test_an_event_after_staged_chunks_reaches_the_client_after_them() -> None:
    channel, sink = Channel(), Sink()
    channel.sink = sink
    channel.offer(data(b"last bytes"))
    end = End(stream=1)
    channel.push(end)  # flushes the staged bytes first
    assert sink.writes == [b"last bytes"]
    assert await channel.get() is end


async def test_while_items_wait_in_the_queue_new_chunks_queue_behind_them() -> None:
    channel, sink = Channel(), Sink(accepts=False)
    channel.sink = sink
    channel.offer(data(b"1"))
    channel.flush()  # refused: queued
    sink.accepts = True
    assert channel.offer(data(b"2")) is False  # queued behind "1", not written past it
    assert sink.writes == []
    assert [await channel.get(), await channel.get()] == [Data(stream=0, chunk=b"1"), data(b"2")]


async def test_an_empty_chunk_is_neither_staged_nor_queued() -> None:
    # written, it would be the chunked-encoding terminator and end the client's response
    channel, sink = Channel(), Sink()
    assert channel.offer(data(b"")) is False
    channel.sink = sink
    assert channel.offer(data(b"")) is False
    channel.flush()
    assert sink.writes == []
    assert len(channel) == 0


async def test_staged_bytes_are_dropped_once_the_request_removed_its_sink() -> None:
    channel, sink = Channel(), Sink()
    channel.sink = sink
    channel.offer(data(b"late"))
    channel.sink = None  # the request ended (client gone)
    channel.flush()
    assert sink.writes == []
    assert len(channel) == 0


async def test_more_data_joins_the_chunks_queued_right_behind_the_first() -> None:
    channel = Channel()
    for item in (data(b"b"), data(b"c"), TICK, data(b"d")):
        channel.push(item)
    assert channel.more_data(b"a") == b"abc"
    assert await channel.get() is TICK
    assert channel.more_data(b"z") == b"zd"
    assert channel.more_data(b"alone") == b"alone"
    channel.push(LOST)
    assert channel.more_data(b"q") == b"q"
    assert await channel.get() is LOST
