"""Routing: which connector takes a request, and who waits when all are busy.

The rules:

* a request goes to the least-loaded connector serving its model (load = active streams
  relative to the connector's advertised ``max_streams``), never past that limit, never to
  a connector that sent or received ``goaway`` and never to one whose LLM server is down
  (it announced the model unavailable);
* a retry (the first connector vanished before the first byte, or answered ``OVERLOADED`` /
  ``GOING_AWAY``) excludes the connectors that already failed it;
* when every candidate is full, the request waits in a ``FairQueue``, and each freed slot
  goes to the next waiter, in round robin across API keys, that the freeing connector can
  serve.

Pure and synchronous: a waiter carries a ``grant`` callback, which the async layer backs
with a future. A ``grant`` that returns False (its request already gave up) is skipped and
the slot offered to the next waiter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Generic

from remotellm_broker.fairqueue import FairQueue
from remotellm_broker.registry import C, Registry

__all__ = ["Router", "Waiter"]


class Waiter(Generic[C]):
    """A queued request: the model it wants, the connectors it must avoid, its callback."""

    __slots__ = ("endpoint", "exclude", "grant", "key", "model")

    def __init__(
        self,
        model: str,
        key: str,
        grant: Callable[[C], bool],
        exclude: Collection[C] = (),
        endpoint: str | None = None,
    ) -> None:
        self.model = model
        self.key = key
        self.grant = grant
        self.exclude = exclude
        self.endpoint = endpoint

    def accepts(self, conn: C) -> bool:
        return conn.offers(self.model, self.endpoint) and conn not in self.exclude


class Router(Generic[C]):
    """Hands out connector slots and keeps the queue of requests waiting for one."""

    def __init__(self, registry: Registry[C], queue_max: int) -> None:
        self.registry = registry
        self.queue: FairQueue[Waiter[C]] = FairQueue(queue_max)

    def has_candidate(
        self, model: str, exclude: Collection[C] = (), endpoint: str | None = None
    ) -> bool:
        """True when some accepting connector serves ``model`` through ``endpoint`` (busy or
        not)."""
        return any(
            c.accepting and c not in exclude and c.offers(model, endpoint)
            for c in self.registry.serving(model)
        )

    def pick(
        self, model: str, exclude: Collection[C] = (), endpoint: str | None = None
    ) -> C | None:
        """Take a slot on the least-loaded connector with room for ``model`` that offers
        ``endpoint`` (None: the OpenAI routes every connector has), or None."""
        best: C | None = None
        for conn in self.registry.serving(model):
            if not conn.has_room or conn in exclude or not conn.serves(model):
                continue
            if endpoint is not None and not conn.offers(model, endpoint):
                continue
            # active/max_streams compared without division; ties go to fewer active streams.
            if best is None or (conn.active * best.max_streams, conn.active) < (
                best.active * conn.max_streams,
                best.active,
            ):
                best = conn
        if best is not None:
            best.active += 1
        return best

    def enqueue(self, waiter: Waiter[C]) -> bool:
        """Queue ``waiter``; False when the queue is full."""
        return self.queue.push(waiter.key, waiter)

    def withdraw(self, waiter: Waiter[C]) -> None:
        """Take ``waiter`` out of the queue (timeout, client gone); harmless if granted."""
        self.queue.remove(waiter.key, waiter)

    def release(self, conn: C) -> None:
        """A stream on ``conn`` ended: free its slot and pass it to a waiter if one fits."""
        conn.active -= 1
        self.offer(conn)

    def offer(self, conn: C) -> None:
        """Give ``conn``'s free slots to queued waiters it can serve.

        Called when a slot frees up, when a connector connects and when its models change.
        """
        while self.queue and conn.has_room and conn in self.registry:
            waiter = self.queue.pop(lambda w: w.accepts(conn))
            if waiter is None:
                return
            conn.active += 1
            if not waiter.grant(conn):
                conn.active -= 1
