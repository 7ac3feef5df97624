"""The hand-off between a connector's reader and the request handler of one stream.

The relay endpoint reads frames off the connector's WebSocket and pushes each one into the
``Channel`` of its stream; the request handler takes them out and writes them to its client.
Besides frames, a channel carries markers: the connection was ``LOST``, the broker ``Cut``
the request (user blocked, deadline, shutdown), or a keep-alive ``TICK`` fell due.

The channel needs no size bound of its own: per-stream credit (``stream_window``) already
caps the response bytes a connector may have in flight, and credit is only granted after
the bytes were written to the client. A slow client therefore holds at most one window of
memory and slows only its own stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

from remotellm_protocol import CancelReason, Data, End, Head

__all__ = ["LOST", "TICK", "Channel", "Cut", "Item", "Lost", "Tick"]


class Lost:
    """The connector's connection closed before the stream ended."""

    __slots__ = ()


class Tick:
    """A keep-alive period passed (only scheduled while no response byte has come)."""

    __slots__ = ()


class Cut:
    """The broker stops this request itself, for ``reason``."""

    __slots__ = ("reason",)

    def __init__(self, reason: CancelReason) -> None:
        self.reason = reason


LOST: Final = Lost()
TICK: Final = Tick()

Item = Head | Data | End | Lost | Tick | Cut


class Channel:
    """A single-consumer queue of stream events with a cheap wake-up."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Item:
        items = self._items
        while not items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return items.popleft()
