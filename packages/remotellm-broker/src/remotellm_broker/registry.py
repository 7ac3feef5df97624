"""Which connectors are connected and which models each one serves.

Pure bookkeeping (no I/O, no aiohttp), so routing can be tested without a socket. The relay
endpoint adds a connector after its handshake and removes it when the socket closes; the
router asks it for the connectors serving a model; ``GET /v1/models`` is answered from here,
from memory, so a dead GPU never stalls the listing.

A connector name is unique: adding a connector whose name is taken replaces the old entry at
once and hands it back, so the caller can close the stale connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from remotellm_protocol import ModelInfo

__all__ = ["Connector", "Registry"]


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
        if info is None:
            return False
        return endpoint is None or (info.endpoints is not None and endpoint in info.endpoints)

    @property
    def has_room(self) -> bool:
        """True when a new stream may be routed here now."""
        return self.accepting and self.active < self.max_streams

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.active}/{self.max_streams}>"


C = TypeVar("C", bound=Connector)


class Registry(Generic[C]):
    """Connected connectors by name, indexed by the models they serve."""

    def __init__(self) -> None:
        self._by_name: dict[str, C] = {}
        self._by_model: dict[str, list[C]] = {}
        self._listing: list[ModelInfo] | None = None

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
        """``conn`` now serves exactly ``models`` (it sent a ``models`` frame)."""
        registered = conn in self
        if registered:
            self._unindex(conn)
        conn.models = {m.id: m for m in models}
        if registered:
            self._index(conn)

    def serving(self, model: str) -> Sequence[C]:
        """The connectors serving ``model``, busy or not (empty when none does)."""
        return self._by_model.get(model, ())

    def models(self) -> list[ModelInfo]:
        """The union of every connector's models, sorted by id, one entry per id.

        When several connectors serve one id, ``owned_by`` is the first one known,
        ``context_length`` the smallest one known (a request may land on any of them) and
        ``endpoints`` the union (each request goes to a connector that offers its endpoint).
        """
        if self._listing is None:
            self._listing = [self._merged(mid) for mid in sorted(self._by_model)]
        return self._listing

    def model(self, model_id: str) -> ModelInfo | None:
        """The merged description of one model, or None when no connector serves it."""
        return self._merged(model_id) if model_id in self._by_model else None

    def _merged(self, model_id: str) -> ModelInfo:
        infos = [c.models[model_id] for c in self._by_model[model_id]]
        owners = [i.owned_by for i in infos if i.owned_by]
        lengths = [i.context_length for i in infos if i.context_length]
        endpoints = {e for i in infos for e in i.endpoints or ()}
        return ModelInfo(
            id=model_id,
            owned_by=owners[0] if owners else None,
            context_length=min(lengths) if lengths else None,
            endpoints=sorted(endpoints) if endpoints else None,
        )

    def _index(self, conn: C) -> None:
        for model_id in conn.models:
            self._by_model.setdefault(model_id, []).append(conn)
        self._listing = None

    def _unindex(self, conn: C) -> None:
        for model_id in conn.models:
            serving = self._by_model.get(model_id)
            if serving is None:
                continue
            serving[:] = [c for c in serving if c is not conn]
            if not serving:
                del self._by_model[model_id]
        self._listing = None
