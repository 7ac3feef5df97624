"""Fixtures of the end-to-end suite: upstreams, the relay stack, clients.

The default stack (``relay``) is the production broker and connector in the test's event loop,
relaying to the demo LLM (the scripted upstream: exact tokens, cadence and faults on request).
``recorded_relay`` relays to the recorded upstream instead (or to a live endpoint, see
``harness.modes``), ``procs`` starts both services with their console scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from harness.cassettes import CASSETTE_DIR, Interaction, load_interactions
from harness.modes import UpstreamChoice, upstream_choice
from harness.replay import ReplayServer, serve_replay
from harness.stack import BrokerHandle, ConnectorHandle, inprocess_broker, inprocess_connector
from remotellm_connector.demo_llm import DemoLLMConfig, DemoLLMServer, serve_demo_llm

DEMO_MODEL = "demo"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Prepare the slow prerequisites once, before any test and outside every test timeout:
    the llama.cpp build (~7 min on 2 cores the first time, then cached), ``npm ci`` and the
    agent CLIs (~1 min the first time, then cached in ~/.cache/remotellm/npm)."""
    if session.config.option.collectonly:
        return
    markers = {m.name for item in session.items for m in item.iter_markers()}
    if "llama" in markers:
        from llama.server import ensure_binary, ensure_model

        ensure_binary()
        ensure_model()
    if "node" in markers:
        from harness.node import ensure_node_client

        ensure_node_client()
    if "clients" in markers:
        from agent_clis.install import ensure_agent_clis

        ensure_agent_clis()


@dataclass
class Relay:
    """A broker with one connector in front of an upstream, and a user's key."""

    broker: BrokerHandle
    connector: ConnectorHandle
    key: str
    upstream_url: str

    @property
    def api_url(self) -> str:
        return self.broker.api_url

    def url(self, path: str) -> str:
        """The broker's URL for an API path such as ``/v1/chat/completions``."""
        return self.broker.url + path

    def async_client(self, **options: object) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.api_url, api_key=self.key, max_retries=0, timeout=30.0, **options
        )

    def sync_client(self, **options: object) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.api_url, api_key=self.key, max_retries=0, timeout=30.0, **options
        )


# -- upstreams ---------------------------------------------------------------------------


@pytest.fixture
async def demo_llm() -> AsyncIterator[DemoLLMServer]:
    """The scripted upstream; each request may set x_ttft_ms, x_gap_ms, x_fail_after…"""
    async with serve_demo_llm(DemoLLMConfig(models=(DEMO_MODEL,), tokens=8)) as llm:
        yield llm


@pytest.fixture(scope="session")
def upstream_mode() -> UpstreamChoice:
    return upstream_choice()


@pytest.fixture(scope="session")
def recorded(upstream_mode: UpstreamChoice) -> list[Interaction]:
    """The cassettes (recorded afresh first in ``record`` mode)."""
    if upstream_mode.mode == "record":
        from harness.record import record_all

        asyncio.run(record_all())
    return list(load_interactions(CASSETTE_DIR))


@pytest.fixture
async def replay_upstream(recorded: list[Interaction]) -> AsyncIterator[ReplayServer]:
    async with serve_replay(recorded) as server:
        yield server
    assert not server.misses, f"requests the recording never saw: {server.misses}"


# -- the relay -----------------------------------------------------------------------------


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[BrokerHandle]:
    async with inprocess_broker(tmp_path) as handle:
        yield handle


@pytest.fixture
async def relay(broker: BrokerHandle, demo_llm: DemoLLMServer) -> AsyncIterator[Relay]:
    """Broker + connector + demo LLM, all in this event loop."""
    key = broker.add_user("alice")
    async with inprocess_connector(broker.relay_url, broker.connector_token(), demo_llm.url) as c:
        relay = Relay(broker, c, key, demo_llm.url)
        await wait_models(relay, {DEMO_MODEL})
        yield relay


async def wait_models(relay: Relay, expected: set[str], within: float = 10.0) -> None:
    """Until the broker lists exactly ``expected`` as available (connectors announce
    asynchronously; models recently served stay listed, unavailable, for the model memory)."""
    from harness.clients import available_models
    from harness.waits import wait_for_async

    async with relay.async_client() as client:

        async def listed() -> bool:
            return await available_models(client) == expected

        await wait_for_async(listed, within, what=f"the broker to list {sorted(expected)}")


@asynccontextmanager
async def relay_to(
    broker: BrokerHandle, base_url: str, model: str, user: str
) -> AsyncIterator[Relay]:
    """A connector in this process relaying ``broker`` to the LLM server at ``base_url``, and a
    key for a new ``user``; ready once ``model`` is listed."""
    key = broker.add_user(user)
    token = broker.connector_token()
    async with inprocess_connector(broker.relay_url, token, base_url) as connector:
        relay = Relay(broker, connector, key, base_url)
        await wait_models(relay, {model})
        yield relay


@pytest.fixture
def sync_client(relay: Relay) -> Iterator[openai.OpenAI]:
    with relay.sync_client() as client:
        yield client


@pytest.fixture
async def async_client(relay: Relay) -> AsyncIterator[openai.AsyncOpenAI]:
    async with relay.async_client() as client:
        yield client


@pytest.fixture(autouse=True, scope="session")
def _usage_records_in_a_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Connectors started without ``data_dir`` (and their processes, which inherit the
    environment) keep usage records under ``$XDG_DATA_HOME``: a temp dir, never home."""
    import os

    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
