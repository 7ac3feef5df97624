"""Shared fixtures: the demo LLM, the broker peer, and a connector running in-process.

Everything listens on 127.0.0.1 with ephemeral ports; every fixture stops what it started.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from broker_peer import TOKEN, BrokerPeer
from remotellm_connector.config import ConnectorSettings, load_settings
from remotellm_connector.demo_llm import DemoLLMConfig, DemoLLMServer, serve_demo_llm
from remotellm_connector.service import Connector


@pytest.fixture
async def demo() -> AsyncIterator[DemoLLMServer]:
    async with serve_demo_llm(DemoLLMConfig(tokens=8, models=("demo",))) as server:
        yield server


@pytest.fixture
async def peer() -> AsyncIterator[BrokerPeer]:
    async with BrokerPeer() as server:
        yield server


class Running:
    """A connector serving in a task of the test's event loop."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.task = asyncio.create_task(connector.run(), name="connector")

    async def stop(self, within: float = 10.0) -> int:
        """Ask for a graceful stop (unless asked already); the exit code."""
        if not self.connector.stopping.is_set():
            self.connector.request_stop()
        async with asyncio.timeout(within):
            return await self.task


StartConnector = Callable[..., Awaitable[Running]]


def make_settings(**overrides: Any) -> ConnectorSettings:
    base: dict[str, Any] = {
        "name": "test-connector",
        "health_port": 0,
        "shutdown_grace_s": 5.0,
        "models_refresh_s": 60.0,
        "llm_connect_timeout_s": 2.0,
        "llm_read_timeout_s": 10.0,
        "token": TOKEN,
    }
    base.update(overrides)
    token = base.pop("token")
    return load_settings(None, {"REMOTELLM_CONNECTOR_TOKEN": token}, base)


@pytest.fixture
async def start_connector(peer: BrokerPeer, demo: DemoLLMServer) -> AsyncIterator[StartConnector]:
    """Start a connector wired to ``peer`` and ``demo``; stopped at teardown."""
    started: list[Running] = []

    async def start(**overrides: Any) -> Running:
        overrides.setdefault("broker_url", peer.url)
        overrides.setdefault("llm_url", demo.url)
        settings = make_settings(**overrides)
        assert settings.token is not None
        running = Running(Connector(settings, settings.token))
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.task.done():
            running.connector.request_stop()
            running.connector.request_stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await running.task


@pytest.fixture(autouse=True, scope="session")
def _usage_records_in_a_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Connectors started without ``data_dir`` keep their usage records under
    ``$XDG_DATA_HOME``: point it at a temp dir, never the tester's home."""
    import os

    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
