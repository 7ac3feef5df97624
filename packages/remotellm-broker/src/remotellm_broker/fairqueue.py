"""A bounded waiting line that is fair across API keys.

When every connector serving a model is busy, requests wait here. A single FIFO would let
one user's burst of a hundred requests starve everyone queued behind it; instead each key
has its own FIFO and the keys take turns (round robin): the key that was just served goes
to the back of the rotation. The whole queue is bounded, because an unbounded buffer is how
a relay runs out of memory under load.

Pure: no I/O and no event loop; the router stores its waiters here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")


def _always(_: object) -> bool:
    return True


class FairQueue(Generic[T]):
    """Per-key FIFOs served in round robin, holding at most ``maxsize`` items in all."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0")
        self.maxsize = maxsize
        self._size = 0
        # Insertion order of this dict is the rotation: the next key to serve comes first.
        self._queues: dict[str, deque[T]] = {}

    def __len__(self) -> int:
        return self._size

    @property
    def full(self) -> bool:
        return self._size >= self.maxsize

    def waiting(self, key: str) -> int:
        """How many items ``key`` has queued."""
        queue = self._queues.get(key)
        return 0 if queue is None else len(queue)

    def push(self, key: str, item: T) -> bool:
        """Queue ``item`` for ``key``; False (and nothing queued) when the queue is full."""
        if self.full:
            return False
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(item)
        self._size += 1
        return True

    def remove(self, key: str, item: T) -> bool:
        """Take ``item`` out (it timed out or its client left); False if it was not queued."""
        queue = self._queues.get(key)
        if queue is None:
            return False
        try:
            queue.remove(item)
        except ValueError:
            return False
        self._size -= 1
        if not queue:
            del self._queues[key]
        return True

    def pop(self, match: Callable[[T], bool] = _always) -> T | None:
        """The next item that ``match`` accepts, fair across keys; None if there is none.

        Keys are tried in rotation order; within a key the oldest matching item wins. The
        key served moves to the back of the rotation.
        """
        for key, queue in self._queues.items():
            for item in queue:
                if match(item):
                    break
            else:
                continue
            queue.remove(item)
            self._size -= 1
            del self._queues[key]
            if queue:
                self._queues[key] = queue  # re-inserted: now last in the rotation
            return item
        return None
