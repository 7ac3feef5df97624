"""Which connectors are connected, which models each one serves, and which models are known.

Pure bookkeeping (no I/O, no aiohttp), so routing can be tested without a socket. The relay
endpoint adds a connector after its handshake and removes it when the socket closes; the
router asks it for the connectors serving a model; ``GET /v1/models`` is answered from here,
from memory, so a dead GPU never stalls the listing.

A model is *known* while some connector announces it, available or not (its LLM server may be
down), and for ``memory_s`` after the last connector announcing it left: a connector that
reconnects after a blip, or restarts, finds its clients waiting rather than told the model
does not exist. Only a model nobody served within that memory is unknown (404).

Every change costs O(models of the connector that changed): each model keeps counters of its
owners, context lengths and available connectors, so the merged view of a model never walks
all the connectors serving it, and ``version`` moves only when some merged view changed.

A connector name is unique: adding a connector whose name is taken replaces the old entry at
once and hands it back, so the caller can close the stale connection.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Generic, TypeVar

from remotellm_protocol import ModelInfo

__all__ = ["Connector", "Registry"]

#: Most models remembered after their connectors left (the oldest are forgotten first).
MAX_REMEMBERED = 100_000


class Connector:
    """A live connector as routing sees it: what it serves, its limit and its load.

    ``active`` counts the streams routed to it that have not ended yet; the router raises
    and lowers it, and never lets it pass ``max_streams``.
    """

    __slots__ = ("accepting", "active", "max_streams", "models", "name", "session_id")

    def __init__(
        self, name: str, session_id: str, models: Iterable[ModelInfo], max_streams: int
    ) -> None:
        self.name = name
        self.session_id = session_id
        #: Every model it announces, available or not.
        self.models: dict[str, ModelInfo] = {m.id: m for m in models}
        self.max_streams = max_streams
        self.active = 0
        #: False once either side sent ``goaway``: in-flight streams finish, no new ones.
        self.accepting = True

    def offers(self, model: str, endpoint: str | None) -> bool:
        """True when this connector serves ``model`` through ``endpoint`` (None: the OpenAI
        routes every server has). A connector that announces no endpoints (an older one) is
        taken to offer only those."""
        info = self.models.get(model)
        if info is None or not info.available:
            return False
        return endpoint is None or (info.endpoints is not None and endpoint in info.endpoints)

    def announces(self, model: str, endpoint: str) -> bool:
        """True when this connector announced ``model`` with ``endpoint``, whether or not
        its LLM server answers now (a down server is not a missing endpoint)."""
        info = self.models.get(model)
        return info is not None and info.endpoints is not None and endpoint in info.endpoints

    @property
    def has_room(self) -> bool:
        """True when a new stream may be routed here now."""
        return self.accepting and self.active < self.max_streams

    def serves(self, model: str) -> bool:
        """True when it announces ``model`` and the LLM server behind it answers."""
        info = self.models.get(model)
        return info is not None and info.available

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.active}/{self.max_streams}>"


C = TypeVar("C", bound=Connector)


class _Entry(Generic[C]):
    """One model id: who announces it, and counters that make its merged view O(1)."""

    __slots__ = ("connectors", "endpoints", "info", "lengths", "owners", "up")

    def __init__(self) -> None:
        self.connectors: dict[C, None] = {}  # an ordered set: first announcer first
        self.owners: dict[str, int] = {}
        self.lengths: dict[int, int] = {}
        self.endpoints: dict[str, int] = {}
        self.up = 0
        self.info: ModelInfo | None = None

    def add(self, conn: C, info: ModelInfo) -> None:
        self.connectors[conn] = None
        if info.owned_by:
            self.owners[info.owned_by] = self.owners.get(info.owned_by, 0) + 1
        if info.context_length:
            self.lengths[info.context_length] = self.lengths.get(info.context_length, 0) + 1
        for endpoint in info.endpoints or ():
            self.endpoints[endpoint] = self.endpoints.get(endpoint, 0) + 1
        self.up += info.available
        self.info = None

    def discard(self, conn: C, info: ModelInfo) -> None:
        del self.connectors[conn]
        _uncount(self.owners, info.owned_by)
        _uncount(self.lengths, info.context_length)
        for endpoint in info.endpoints or ():
            _uncount(self.endpoints, endpoint)
        self.up -= info.available
        self.info = None

    def merged(self, model_id: str) -> ModelInfo:
        """``owned_by`` of the first announcer still here, the smallest context length (a
        request may land on any of them), the union of the endpoints (each request goes to a
        connector that offers its endpoint), available when any of them is."""
        if self.info is None:
            self.info = ModelInfo(
                id=model_id,
                owned_by=next(iter(self.owners), None),
                context_length=min(self.lengths) if self.lengths else None,
                available=self.up > 0,
                endpoints=sorted(self.endpoints) if self.endpoints else None,
            )
        return self.info


K = TypeVar("K", str, int)


def _uncount(counts: dict[K, int], value: K | None) -> None:
    if not value:
        return
    left = counts[value] - 1
    if left:
        counts[value] = left
    else:
        del counts[value]


class Registry(Generic[C]):
    """Connected connectors by name, indexed by the models they announce."""

    def __init__(
        self, *, memory_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.memory_s = memory_s
        self._clock = clock
        self._by_name: dict[str, C] = {}
        self._by_model: dict[str, _Entry[C]] = {}
        #: Models no connector announces any more -> when the last one left, oldest first.
        self._gone: OrderedDict[str, float] = OrderedDict()
        self._sorted: list[str] | None = None
        #: Moves whenever the listing (ids or a merged view) may have changed.
        self.version = 0

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[C]:
        return iter(list(self._by_name.values()))

    def __contains__(self, conn: object) -> bool:
        return isinstance(conn, Connector) and self._by_name.get(conn.name) is conn

    def add(self, conn: C) -> C | None:
        """Register ``conn``; return the connector it replaced under the same name, if any."""
        replaced = self._by_name.get(conn.name)
        if replaced is not None:
            self._unindex(replaced)
        self._by_name[conn.name] = conn
        self._index(conn)
        return replaced

    def remove(self, conn: C) -> bool:
        """Forget ``conn`` unless a newer connector already took its name."""
        if self._by_name.get(conn.name) is not conn:
            return False
        del self._by_name[conn.name]
        self._unindex(conn)
        return True

    def update_models(self, conn: C, models: Iterable[ModelInfo]) -> None:
        """``conn`` now announces exactly ``models`` (it sent a ``models`` frame)."""
        if conn not in self:
            conn.models = {m.id: m for m in models}
            return
        new = {m.id: m for m in models}
        old = conn.models
        conn.models = new
        for mid, info in old.items():
            if mid not in new:
                self._drop(conn, mid, info)
        for mid, info in new.items():
            before = old.get(mid)
            if before is None:
                self._put(conn, mid, info)
            elif before != info:  # e.g. its LLM server went down: the entry stays
                entry = self._by_model[mid]
                entry.discard(conn, before)
                entry.add(conn, info)
                self.version += 1

    def serving(self, model: str) -> Collection[C]:
        """The connectors announcing ``model``, busy, draining or with their LLM down."""
        entry = self._by_model.get(model)
        return () if entry is None else entry.connectors.keys()

    def known(self, model: str) -> bool:
        """True when some connector announces ``model`` or one did within ``memory_s``."""
        if model in self._by_model:
            return True
        gone_at = self._gone.get(model)
        return gone_at is not None and self._clock() - gone_at < self.memory_s

    def attached(self, model: str) -> bool:
        """True when a connector announces ``model`` (its LLM server may be down)."""
        return model in self._by_model

    def models(self) -> list[ModelInfo]:
        """Every known model, sorted by id, one merged entry per id (remembered ones are
        listed unavailable)."""
        return [self.model_info(mid) for mid in self.model_ids()]

    def model_ids(self) -> list[str]:
        """The ids of every known model, sorted (cached until the set changes)."""
        self._forget_expired()
        if self._sorted is None:
            self._sorted = sorted([*self._by_model, *self._gone])
        return self._sorted

    def model_info(self, model_id: str) -> ModelInfo:
        """The merged description of a known model (see ``model_ids``)."""
        entry = self._by_model.get(model_id)
        if entry is not None:
            return entry.merged(model_id)
        return ModelInfo(id=model_id, available=False)

    def model(self, model_id: str) -> ModelInfo | None:
        """The merged description of one model, or None when it is not known."""
        return self.model_info(model_id) if self.known(model_id) else None

    # -- index maintenance --------------------------------------------------------------------

    def _index(self, conn: C) -> None:
        for mid, info in conn.models.items():
            self._put(conn, mid, info)

    def _unindex(self, conn: C) -> None:
        for mid, info in conn.models.items():
            self._drop(conn, mid, info)

    def _put(self, conn: C, mid: str, info: ModelInfo) -> None:
        entry = self._by_model.get(mid)
        if entry is None:
            entry = self._by_model[mid] = _Entry()
            if self._gone.pop(mid, None) is None:
                self._sorted = None
        entry.add(conn, info)
        self.version += 1

    def _drop(self, conn: C, mid: str, info: ModelInfo) -> None:
        entry = self._by_model.get(mid)
        if entry is None or conn not in entry.connectors:
            return
        entry.discard(conn, info)
        self.version += 1
        if entry.connectors:
            return
        del self._by_model[mid]
        if self.memory_s > 0:
            self._gone[mid] = self._clock()
            if len(self._gone) > MAX_REMEMBERED:
                self._gone.popitem(last=False)
                self._sorted = None
        else:
            self._sorted = None

    def _forget_expired(self) -> None:
        gone = self._gone
        if not gone:
            return
        horizon = self._clock() - self.memory_s
        while gone:
            mid, gone_at = next(iter(gone.items()))
            if gone_at > horizon:
                return
            del gone[mid]
            self._sorted = None
            self.version += 1
