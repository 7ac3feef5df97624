"""Everything one broker process shares across requests, created once per app.

``BrokerState`` wires the pure parts (registry, router, rate limits) to the live ones (the
user store, connector links, requests in flight) and owns the few background tasks. It is
stored on the app under ``BROKER`` by the app's cleanup context and reached from every
handler through ``request.app[BROKER]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import web

from remotellm_broker.announce import Announcements
from remotellm_broker.config import BrokerSettings
from remotellm_broker.credentials import plausible
from remotellm_broker.exchange import Exchange
from remotellm_broker.intake import BodyBudget
from remotellm_broker.link import ConnectorLink
from remotellm_broker.listing import ModelListing
from remotellm_broker.logs import get_logger
from remotellm_broker.metering import UsageBook
from remotellm_broker.metrics import Metrics
from remotellm_broker.ratelimit import RateLimiter, StreamSlots
from remotellm_broker.registry import Registry
from remotellm_broker.router import Router
from remotellm_broker.tokenlinks import Lease, TokenLinks
from remotellm_broker.users import UserStore
from remotellm_protocol import CancelReason, CloseCode, ModelInfo, RemoteProtocolError

__all__ = ["BROKER", "BrokerState"]

log = get_logger("remotellm_broker.state")


class BrokerState:
    """Shared state of the broker: connectors, routing, limits, requests in flight."""

    def __init__(
        self,
        settings: BrokerSettings,
        store: UserStore,
        *,
        heartbeat_s: float,
        handshake_timeout_s: float,
    ) -> None:
        self.settings = settings
        self.store = store
        self.heartbeat_s = heartbeat_s
        self.handshake_timeout_s = handshake_timeout_s
        self.started_at = int(time.time())
        self._started = time.monotonic()
        self.registry: Registry[ConnectorLink] = Registry(memory_s=settings.model_memory_s)
        self.router: Router[ConnectorLink] = Router(self.registry, settings.queue_max)
        self.listing = ModelListing(self.registry, self.started_at)
        self.metrics = Metrics()
        #: Usage records and quota counters (opens the usage database).
        self.usage = UsageBook(settings, self.metrics)
        self.limiter = RateLimiter()
        self.slots = StreamSlots()
        self.token_links = TokenLinks(settings.max_links_per_token)
        self.announcements = Announcements(
            max_models=settings.max_models_per_connector,
            per_minute=settings.model_announcements_per_minute,
        )
        self.body_budget = BodyBudget(settings.max_body_bytes_in_flight)
        #: False from the moment shutdown begins (``/readyz`` answers 503).
        self.ready = True
        self.draining = False
        self._exchanges: dict[str, set[Exchange]] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- connectors -------------------------------------------------------------------------

    def connector_token_name(self, token: str | None) -> str | None:
        """The name of a valid connector token (users.yaml or the environment), or None."""
        if token is None or not plausible(token):
            return None
        return self.store.check_connector_token(token)

    def token_owner(self, connector_name: str) -> str | None:
        """The connector token ``tokens create`` named ``connector_name``, if any: that
        name belongs to it."""
        named = any(t.name == connector_name for t in self.store.list_connector_tokens())
        return connector_name if named else None

    def revoke_links(self) -> int:
        """Close every link whose connector token no longer authenticates (users.yaml
        changed); how many. Name bindings of deleted tokens are forgotten."""

        def still_valid(lease: Lease) -> bool:
            return self.connector_token_name(lease.secret) == lease.token_name

        revoked = self.token_links.revoke(still_valid)
        names = {t.name for t in self.store.list_connector_tokens()}
        # Environment tokens (``env-token-…``) cannot change while the broker runs.
        self.token_links.forget(lambda t: t in names or t.startswith("env-token-"))
        for lease in revoked:
            log.warning(
                "connector_token_revoked",
                token=lease.token_name,
                connector=lease.connector,
            )
        return len(revoked)

    def announce_models(
        self, token_name: str, link: ConnectorLink, models: Sequence[ModelInfo]
    ) -> None:
        """A ``models`` frame from ``link``: rate limited per token, bounded in size."""
        if not self.announcements.allow(token_name):
            raise RemoteProtocolError(
                "models announced more than "
                f"{self.announcements.per_minute} times a minute (model_announcements_per_minute)",
                CloseCode.POLICY_VIOLATION,
            )
        self.models_changed(link, self.announcements.bounded(models, connector=link.name))

    def add_link(self, link: ConnectorLink) -> ConnectorLink | None:
        """Register a connector after its handshake; a stale one of the same name is
        replaced at once (its streams end, its socket closes with ``REPLACED``)."""
        replaced = self.registry.add(link)
        if replaced is not None:
            replaced.lost()
            self.spawn(replaced.ws.close(code=CloseCode.REPLACED, message=b"replaced"))
        self.metrics.connectors.set(len(self.registry))
        self._count_models()
        self.router.offer(link)
        return replaced

    def remove_link(self, link: ConnectorLink) -> None:
        self.registry.remove(link)
        link.lost()
        self.metrics.connectors.set(len(self.registry))
        self._count_models()

    def release(self, link: ConnectorLink) -> None:
        """A stream on ``link`` ended (the link's callback)."""
        self.router.release(link)

    def _count_models(self) -> None:
        """The connectors-per-model gauge, after every change of who serves what."""
        counts: dict[str, int] = {}
        for connector in self.registry:
            for model in connector.models:
                counts[model] = counts.get(model, 0) + 1
        self.metrics.models_served(counts)

    def models_changed(self, link: ConnectorLink, models: Sequence[ModelInfo]) -> None:
        self.registry.update_models(link, models)
        self._count_models()
        self.router.offer(link)

    def starting(self) -> bool:
        """True during the first ``attach_wait_s`` of the process: connectors are still
        finding this broker (a restart), so a model not known yet may be a moment away."""
        return time.monotonic() - self._started < self.settings.attach_wait_s

    # -- requests in flight -----------------------------------------------------------------

    def track(self, ex: Exchange) -> None:
        assert ex.key_id is not None
        self._exchanges.setdefault(ex.key_id, set()).add(ex)
        self._in_flight += 1
        self._idle.clear()
        self.metrics.active_streams.inc()

    def untrack(self, ex: Exchange) -> None:
        assert ex.key_id is not None
        group = self._exchanges.get(ex.key_id)
        if group is None or ex not in group:
            return
        group.discard(ex)
        if not group:
            del self._exchanges[ex.key_id]
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()
        self.metrics.active_streams.dec()

    def live(self) -> list[Exchange]:
        """The requests in flight now, oldest first (the admin page's live streams)."""
        return sorted(
            (ex for group in self._exchanges.values() for ex in group), key=lambda e: e.started
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def cut_blocked(self) -> int:
        """End the requests of users who are now blocked (users.yaml changed); how many."""
        cut = 0
        for group in list(self._exchanges.values()):
            secret = next(iter(group)).secret
            identity = self.store.authenticate(secret) if secret else None
            if identity is not None and identity.blocked:
                for ex in list(group):
                    ex.cut(CancelReason.USER_BLOCKED)
                    cut += 1
        return cut

    def cut_all(self, reason: CancelReason) -> None:
        for group in list(self._exchanges.values()):
            for ex in list(group):
                ex.cut(reason)

    async def wait_idle(self, within: float) -> bool:
        """Wait up to ``within`` seconds until no request is in flight; False if some remain."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- lifecycle --------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Readiness false, ``goaway`` to every connector, queued requests fail now."""
        if self.draining:
            return
        self.ready = False
        self.draining = True
        for link in self.registry:
            link.go_away()
        for group in list(self._exchanges.values()):
            for ex in list(group):
                if ex.waiting is not None and not ex.waiting.done():
                    ex.cut(CancelReason.SHUTDOWN)
        log.info("shutdown_started", in_flight=self._in_flight, connectors=len(self.registry))

    async def close_links(self, code: int = CloseCode.GOING_AWAY) -> None:
        """Close every connector socket (after draining)."""
        links = list(self.registry)
        await asyncio.gather(
            *(link.ws.close(code=code, message=b"broker shutting down") for link in links),
            return_exceptions=True,
        )

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background job owned by the broker (cancelled at cleanup)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


#: The app key under which the app's cleanup context stores the state.
BROKER = web.AppKey("remotellm_broker.state", BrokerState)
