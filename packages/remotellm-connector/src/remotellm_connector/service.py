"""The daemon: discovery, the health port, and the relay link with its reconnect loop.

Lifecycle, in the order things happen::

    find the LLM, read its models ─▶ health port up ─▶ dial ─▶ serve ─▶ (connection ends)
                                                        ▲                    │
                                                        └── backoff delay ◀──┘

Shutdown (SIGTERM or SIGINT, uvicorn-style): the first signal sends ``goaway``, turns
``/readyz`` false, refuses new streams and lets in-flight ones finish within the grace period
(30 s by default), then closes the relay and exits 0. A second signal ends the in-flight streams
at once with an error and exits 1. A signal while no relay is up exits at once.
"""

import asyncio
import contextlib
import os
import signal
import sqlite3
import stat
from pathlib import Path

import structlog

from remotellm_connector.backoff import Backoff
from remotellm_connector.capacity import MAX_STREAMS_LIMIT, stream_cap
from remotellm_connector.config import (
    ConnectorSettings,
    data_dir,
    normalize_broker_url,
    normalize_llm_url,
)
from remotellm_connector.discovery import ModelWatcher
from remotellm_connector.health import HealthServer, Status, make_health_app
from remotellm_connector.link import Link, LinkResult
from remotellm_connector.livestreams import add_streams_route, live_streams
from remotellm_connector.metrics import Metrics
from remotellm_connector.policy import Policy
from remotellm_connector.records import StreamLog
from remotellm_connector.upstream import Upstream

__all__ = ["Connector", "StartupError", "run_connector"]

log = structlog.get_logger("remotellm_connector.service")


class StartupError(Exception):
    """The connector cannot start (health port taken, ...); the message says how to fix it."""


class Connector:
    """One connector process's worth of state; ``run`` until stopped."""

    def __init__(self, settings: ConnectorSettings, token: str) -> None:
        if settings.broker_url is None:
            raise StartupError(
                "broker_url is not set (--broker-url or REMOTELLM_CONNECTOR_BROKER_URL)"
            )
        self.settings = settings
        self.token = token
        self.broker_url = normalize_broker_url(settings.broker_url)
        self.metrics = Metrics()
        self.status = Status()
        self.backoff = Backoff()
        #: The owner's usage records (``records``), open while ``run`` runs.
        self.records: StreamLog | None = None
        self.policy = Policy(
            allowed_users=settings.allowed_users,
            rpm=settings.user_rate_limit_rpm,
            burst=settings.user_rate_limit_burst,
            user_max_streams=settings.user_max_streams,
            max_streams=stream_cap(settings.max_streams, None)[0],
        )
        self.stopping = asyncio.Event()
        self.forced = asyncio.Event()
        self.health: HealthServer | None = None
        self.link: Link | None = None
        #: Links to a draining broker still finishing their streams.
        self._draining_links: set[asyncio.Future[LinkResult]] = set()
        self._connections = 0
        self._cap_logged = False

    def request_stop(self) -> None:
        """First call: graceful drain. Second call: end everything now."""
        if not self.stopping.is_set():
            log.info("shutdown_requested", grace_s=self.settings.shutdown_grace_s)
            self.status.draining = True
            self.stopping.set()
        elif not self.forced.is_set():
            log.warning("shutdown_forced")
            self.forced.set()

    async def run(self) -> int:
        """Serve until stopped; the process exit code."""
        s = self.settings
        llm_url = normalize_llm_url(s.llm_url) if s.llm_url else None
        async with Upstream(
            llm_url,
            api_key=s.llm_api_key,
            connect_timeout=s.llm_connect_timeout_s,
            read_timeout=s.llm_read_timeout_s,
            pool_size=(s.max_streams or MAX_STREAMS_LIMIT) + 4,  # the policy caps the streams
        ) as upstream:
            watcher = ModelWatcher(
                upstream,
                autodetect=llm_url is None,
                interval=s.models_refresh_s,
                probe_interval=s.llm_probe_interval_s,
            )
            upstream.on_unreachable = watcher.poke
            await self._refresh(watcher)
            health_app = make_health_app(self.status, self.metrics)
            add_streams_route(
                health_app, lambda: live_streams(self.link.dispatcher if self.link else None)
            )
            self.health = HealthServer(health_app, s.health_host, s.health_port)
            self.records = self._open_records()
            try:
                await self.health.start()
            except OSError as exc:
                raise StartupError(
                    f"health server cannot listen on {s.health_host}:{s.health_port}: "
                    f"{exc.strerror or exc} (pick another port with --health-port)"
                ) from None
            log.info(
                "connector_started",
                name=s.name,
                broker=self.broker_url,
                llm=upstream.base_url,
                health=f"http://{s.health_host}:{self.health.port}",
                max_streams=self._apply_stream_cap(watcher),
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    refresher = tg.create_task(self._refresh_forever(watcher))
                    try:
                        return await self._relay_loop(upstream, watcher)
                    finally:
                        refresher.cancel()
            finally:
                await self.health.stop()
                if self.records is not None:
                    await asyncio.to_thread(self.records.close)

    def _open_records(self) -> StreamLog | None:
        """The owner's usage records; a connector that cannot keep them still serves."""
        s = self.settings
        if s.usage_retention_days == 0:
            return None
        path = data_dir(s, os.environ) / "usage.db"
        try:
            return StreamLog(
                path,
                s.name,
                self.metrics.usage_records_dropped,
                retention_s=s.usage_retention_days * 86400.0,
            )
        except (OSError, sqlite3.Error) as exc:
            log.warning("usage_records_unavailable", path=str(path), error=str(exc)[:200])
            return None

    def _apply_stream_cap(self, watcher: ModelWatcher) -> int:
        """The stream cap for the next relay connection (explicit setting, else derived)."""
        cap, why = stream_cap(self.settings.max_streams, watcher.slots)
        if cap != self.policy.max_streams or not self._cap_logged:
            log.info("stream_cap", max_streams=cap, source=why)
            self._cap_logged = True
        self.policy.max_streams = cap
        return cap

    async def _refresh(self, watcher: ModelWatcher) -> None:
        await watcher.refresh()
        self.status.llm_reachable = watcher.reachable
        self.metrics.llm_up.set(1 if watcher.reachable else 0)
        self.metrics.models.set(len(watcher.models))
        if watcher.upstream.base_url:
            self.status.details["llm_url"] = watcher.upstream.base_url

    async def _refresh_forever(self, watcher: ModelWatcher) -> None:
        while True:
            await watcher.wait_next()
            try:
                await self._refresh(watcher)
            except Exception:  # discovery must never take the daemon down
                log.exception("model_refresh_failed")

    async def _relay_loop(self, upstream: Upstream, watcher: ModelWatcher) -> int:
        s = self.settings
        while not self.stopping.is_set():
            self.link = Link(
                url=self.broker_url,
                token=self.token,
                name=s.name,
                max_streams=self._apply_stream_cap(watcher),
                upstream=upstream,
                policy=self.policy,
                metrics=self.metrics,
                watcher=watcher,
                ping_interval=s.ping_interval_s,
                ping_timeout=s.ping_timeout_s,
                on_connected=self._connected,
                records=self.records,
            )
            result = await self._serve_link(self.link)
            self.status.relay_up = False
            self.metrics.relay_connected.set(0)
            if self.stopping.is_set():
                break
            if not result.connected:
                delay = self.backoff.failed()
                self.metrics.connect_failures.inc()
                log.warning(
                    "relay_connect_failed",
                    error=result.reason,
                    failures=self.backoff.failures,
                    retry_in_s=round(delay, 2),
                )
                if self.backoff.alerting and not self.status.alerting:
                    log.error(
                        "relay_alert",
                        error=result.reason,
                        failures=self.backoff.failures,
                        hint="run 'remotellm-connector check' to diagnose",
                    )
                self.status.alerting = self.backoff.alerting
                self.metrics.alerting.set(1 if self.backoff.alerting else 0)
                if s.max_retries and self.backoff.failures > s.max_retries:
                    log.error("giving_up", failures=self.backoff.failures)
                    return 1
            else:
                delay = self.backoff.disconnected(
                    planned=result.planned, grow=result.replaced, served=result.served
                )
                log.info("relay_down", reason=result.reason, retry_in_s=round(delay, 2))
            await self._sleep(delay)
        if self._draining_links:  # their own drain follows ``stopping`` and ``forced``
            await asyncio.gather(*self._draining_links, return_exceptions=True)
        return 1 if self.forced.is_set() else 0

    async def _serve_link(self, link: Link) -> LinkResult:
        """Run ``link`` until it ends, or until the broker sends ``goaway``: a draining
        (restarting) broker finishes its streams on the old link while the loop dials again,
        so a new broker process on the same address gets this connector within a second."""
        run = asyncio.ensure_future(self._run_link(link))
        goaway = asyncio.ensure_future(link.broker_goaway.wait())
        try:
            await asyncio.wait((run, goaway), return_when=asyncio.FIRST_COMPLETED)
        finally:
            goaway.cancel()
        if run.done():
            return run.result()
        self._draining_links.add(run)
        run.add_done_callback(self._draining_links.discard)
        log.info("relay_draining_elsewhere", hint="the broker is restarting; dialling again")
        return LinkResult(connected=True, planned=True, reason="broker goaway", served=True)

    async def _run_link(self, link: Link) -> LinkResult:
        try:
            return await link.run(self.stopping, self.forced, self.settings.shutdown_grace_s)
        except Exception as exc:  # a bug must not end a daemon meant to run for months
            log.exception("relay_failed")
            return LinkResult(connected=True, reason=f"internal error: {exc!r}")

    def _connected(self) -> None:
        self.backoff.connected()
        if self._connections:
            self.metrics.reconnects.inc()
        self._connections += 1
        self.status.relay_up = True
        self.status.alerting = False
        self.metrics.alerting.set(0)
        self.metrics.relay_connected.set(1)

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if a shutdown is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)


def warn_if_token_file_readable(settings: ConnectorSettings) -> None:
    """A token others can read is a token others can use: say so (but keep running)."""
    if settings.token_file and not settings.token:
        try:
            mode = Path(settings.token_file).expanduser().stat().st_mode
        except OSError:
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token_file_readable_by_others", path=settings.token_file, fix="chmod 600")


async def run_connector(settings: ConnectorSettings, token: str) -> int:
    """Run the daemon with signal handling; the exit code."""
    connector = Connector(settings, token)
    warn_if_token_file_readable(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, connector.request_stop)
    try:
        return await connector.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("connector_stopped", pid=os.getpid())
