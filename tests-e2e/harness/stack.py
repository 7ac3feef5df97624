"""The production broker and connector, in the test's own event loop.

Nothing here re-implements either service: the broker is ``remotellm_broker.serve.run_broker``
(the very coroutine ``remotellm-broker serve`` runs, with its graceful drain), the connector is
``remotellm_connector.service.Connector`` (what ``remotellm-connector run`` runs). Both listen
on 127.0.0.1 ephemeral ports, with their real sockets; only signal handling is left out (a test
calls ``stop()`` instead of sending SIGTERM; the subprocess tests in ``procs`` cover signals).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.waits import wait_for
from remotellm_broker.config import BrokerSettings
from remotellm_broker.serve import Bound, run_broker
from remotellm_broker.users import UserStore
from remotellm_connector.config import ConnectorSettings
from remotellm_connector.service import Connector

__all__ = ["BrokerHandle", "ConnectorHandle", "inprocess_broker", "inprocess_connector"]

# Quick to notice and to recover, so failure tests take a second, not a minute.
FAST_CONNECTOR: dict[str, Any] = {
    "ping_interval_s": 1.0,
    "ping_timeout_s": 2.0,
    "shutdown_grace_s": 10.0,
    "models_refresh_s": 0.5,
    "llm_connect_timeout_s": 2.0,
}


@dataclass
class BrokerHandle:
    """A broker serving in this event loop."""

    settings: BrokerSettings
    store: UserStore
    bound: Bound
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return self.bound.url

    @property
    def api_url(self) -> str:
        """The OpenAI base URL (``…/v1``)."""
        return f"{self.bound.url}/v1"

    @property
    def relay_url(self) -> str:
        return self.bound.url.replace("http://", "ws://", 1) + "/v1/relay"

    @property
    def health_url(self) -> str:
        return f"http://{self.bound.health_host}:{self.bound.health_port}"

    def add_user(self, name: str) -> str:
        """A new local user; returns its API key."""
        return self.store.add_user(name)

    def connector_token(self, name: str = "connector") -> str:
        return self.store.create_connector_token(name)

    async def stop(self, within: float = 60.0) -> None:
        """What SIGTERM does: drain, then exit."""
        self.stop_event.set()
        async with asyncio.timeout(within):
            await asyncio.shield(self.task)


@asynccontextmanager
async def inprocess_broker(
    workdir: Path, *, overrides: Mapping[str, Any] | None = None, **app_options: Any
) -> AsyncIterator[BrokerHandle]:
    """``remotellm-broker serve`` on ephemeral ports, users file in ``workdir``."""
    values: dict[str, Any] = {
        "port": 0,
        "health_port": 0,
        "users_file": str(workdir / "users.yaml"),
        "shutdown_timeout": 10.0,
        "log_format": "json",
        **(overrides or {}),
    }
    settings = BrokerSettings(**values)
    store = UserStore(Path(settings.users_file))
    stop = asyncio.Event()
    ready: asyncio.Future[Bound] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_broker(settings, store, stop=stop, started=ready.set_result, **app_options)
    )
    try:
        async with asyncio.timeout(10):
            pending: set[asyncio.Future[Any]] = {task, ready}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises why it did not start
        yield BrokerHandle(settings, store, ready.result(), stop, task)
    finally:
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(30):
                await task
        if not task.done():
            task.cancel()


@dataclass
class ConnectorHandle:
    """A connector serving in this event loop."""

    connector: Connector
    task: asyncio.Task[int]
    name: str
    exit_code: list[int] = field(default_factory=list)

    @property
    def relay_up(self) -> bool:
        return self.connector.status.relay_up

    async def wait_connected(self, within: float = 10.0) -> None:
        await wait_for(lambda: self.relay_up, within, what=f"connector {self.name} to connect")

    async def stop(self, within: float = 60.0) -> int:
        """What SIGTERM does: goaway, drain, exit."""
        self.connector.request_stop()
        async with asyncio.timeout(within):
            return await asyncio.shield(self.task)

    async def kill(self) -> None:
        """Stop at once: in-flight streams end with an error (a second SIGTERM)."""
        self.connector.request_stop()
        self.connector.request_stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(10):
                await asyncio.shield(self.task)


@asynccontextmanager
async def inprocess_connector(
    broker_url: str,
    token: str,
    llm_url: str,
    *,
    name: str = "gpu-box",
    wait: bool = True,
    **settings: Any,
) -> AsyncIterator[ConnectorHandle]:
    """``remotellm-connector run`` against ``broker_url`` (a ws:// relay URL)."""
    values = {
        "broker_url": broker_url,
        "llm_url": llm_url,
        "name": name,
        "health_port": 0,
        "log_format": "json",
        **FAST_CONNECTOR,
        **settings,
    }
    connector = Connector(ConnectorSettings(**values), token)
    task = asyncio.create_task(connector.run())
    handle = ConnectorHandle(connector, task, name)
    try:
        if wait:
            await handle.wait_connected()
        yield handle
    finally:
        if not task.done():
            connector.request_stop()
            connector.request_stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(15):
                await task
        if not task.done():
            task.cancel()
