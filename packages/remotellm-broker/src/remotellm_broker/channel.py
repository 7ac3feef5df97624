"""The hand-off between a connector's reader and the request handler of one stream.

The relay endpoint reads frames off the connector's WebSocket and pushes each one into the
``Channel`` of its stream; the request handler takes them out and writes them to its client.
Besides frames, a channel carries markers: the connection was ``LOST``, the broker ``Cut``
the request (user blocked, deadline, shutdown), or a keep-alive ``TICK`` fell due.

The hot path skips the queue: once a response is flowing, its request handler installs a
``sink`` (a plain function that writes to the client's socket: ``fastpath``, whose
aiohttp preconditions are written down there) and the link hands each
``data`` chunk to ``offer``, which stages it; the link flushes every staged channel once per
batch of frames read (one ``call_soon`` per batch, no timer), so all chunks of a stream that
arrived together leave in one write, without waking the handler's task at all. Whatever the
sink cannot take (the client's socket is paused or closing), and every non-``data`` event,
goes through the queue; staged bytes are flushed before any event is queued, and nothing is
staged while the queue holds items, so the client sees the bytes in the order they came.

The channel needs no size bound of its own: per-stream credit (``stream_window``) already
caps the response bytes a connector may have in flight, and credit is only granted after
the bytes were written to the client. A slow client therefore holds at most one window of
memory and slows only its own stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

from remotellm_protocol import CancelReason, Data, End, Head

__all__ = ["LOST", "TICK", "Broken", "Channel", "Cut", "Item", "Lost", "Tick"]


class Lost:
    """The connector's connection closed before the stream ended."""

    __slots__ = ()


class Broken:
    """The connector broke the relay protocol on this stream (the link is closed for it)."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class Tick:
    """A keep-alive period passed (scheduled for streaming requests until they end)."""

    __slots__ = ()


class Cut:
    """The broker stops this request itself, for ``reason``."""

    __slots__ = ("reason",)

    def __init__(self, reason: CancelReason) -> None:
        self.reason = reason


LOST: Final = Lost()
TICK: Final = Tick()

Item = Head | Data | End | Lost | Broken | Tick | Cut


class Channel:
    """A single-consumer queue of stream events with a cheap wake-up."""

    __slots__ = ("_items", "_loop", "_staged", "_waiter", "sink")

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()  # looked up once, not per wait
        self._staged: list[bytes] = []
        #: Writes a chunk straight to the client; False when it cannot take it now.
        self.sink: Callable[[bytes], bool] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, frame: Data) -> bool:
        """Take one ``data`` frame: staged for ``flush`` when a sink is installed and nothing
        is queued, else queued. True when this is the first chunk staged since the last
        flush (the caller then schedules one)."""
        if not frame.chunk:
            # Nothing to relay, and an empty chunk in HTTP/1.1 chunked framing is the
            # terminator: written, it would end the client's response early.
            return False
        if self.sink is None or self._items:
            self.push(frame)
            return False
        staged = self._staged
        staged.append(frame.chunk)
        return len(staged) == 1

    def flush(self) -> None:
        """Write the staged chunks as one; queue them if the sink refuses."""
        staged = self._staged
        if not staged:
            return
        chunk = staged[0] if len(staged) == 1 else b"".join(staged)
        staged.clear()
        sink = self.sink
        if sink is None:  # the request is over: nobody reads these bytes any more
            return
        if not sink(chunk):
            self._queue(Data(stream=0, chunk=chunk))

    def push(self, item: Item) -> None:
        if self._staged:
            self.flush()
        self._queue(item)

    def _queue(self, item: Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def more_data(self, first: bytes) -> bytes:
        """``first`` joined with every ``data`` chunk queued right behind it.

        Under load several chunks of a stream arrive between two wake-ups of its handler;
        writing them as one costs one system call instead of one per chunk. The bytes the
        client receives are the same.
        """
        items = self._items
        if not items or type(items[0]) is not Data:
            return first
        parts = [first]
        while items:
            item = items[0]
            if type(item) is not Data:
                break
            items.popleft()
            parts.append(item.chunk)
        return b"".join(parts)

    async def get(self) -> Item:
        items = self._items
        while not items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return items.popleft()
