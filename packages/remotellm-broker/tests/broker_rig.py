"""Test rig: a real broker (``serve.run_broker``) on 127.0.0.1 ephemeral ports.

``running_broker`` starts the same code path ``remotellm-broker serve`` runs (public app with
handler cancellation, health app, graceful shutdown), with one user key and one connector
token, and stops it at the end. ``Rig.peer`` connects scripted connectors to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai

from connector_peer import ConnectorPeer
from remotellm_broker.app import BROKER
from remotellm_broker.config import BrokerSettings
from remotellm_broker.serve import Bound, run_broker
from remotellm_broker.state import BrokerState
from remotellm_broker.users import UserStore


@dataclass
class Rig:
    settings: BrokerSettings
    store: UserStore
    bound: Bound
    key: str
    token: str
    stop: asyncio.Event
    task: asyncio.Task[None]
    state: BrokerState
    http: aiohttp.ClientSession
    peers: list[ConnectorPeer] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.bound.url

    @property
    def relay_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/relay"

    @property
    def health_url(self) -> str:
        return f"http://{self.bound.health_host}:{self.bound.health_port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def token_for(self, name: str) -> str:
        """The connector token of connector ``name``: a token is one identity, so each
        name gets its own (``peer``, the default name, gets ``rig.token``)."""
        if name == "peer":
            return self.token
        if name not in self.tokens:
            self.tokens[name] = self.store.create_connector_token(name)
        return self.tokens[name]

    async def peer(self, **kwargs: Any) -> ConnectorPeer:
        """A scripted connector, connected and registered (with its own token)."""
        token = kwargs.pop("token", None) or self.token_for(kwargs.get("name", "peer"))
        peer = ConnectorPeer(self.relay_url, token, **kwargs)
        self.peers.append(peer)
        await peer.connect()
        await wait_for(lambda: peer.name in {c.name for c in self.state.registry})
        return peer

    def client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """An ``openai`` SDK client for this broker (closed with the rig)."""
        kwargs.setdefault("api_key", self.key)
        kwargs.setdefault("max_retries", 0)
        client = openai.AsyncOpenAI(base_url=self.url + "/v1", **kwargs)
        self.clients.append(client)
        return client

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def wait_for(predicate: Any, within: float = 5.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until true (for state that settles asynchronously, across tasks
    and sockets, where no single event could be awaited)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_broker(tmp_path: Path, **overrides: Any) -> AsyncIterator[Rig]:
    app_options = {
        k: overrides.pop(k) for k in ("heartbeat_s", "handshake_timeout_s") if k in overrides
    }
    fields: dict[str, Any] = {
        "port": 0,
        "health_port": 0,
        "users_file": str(tmp_path / "users.yaml"),
        "keepalive_interval_s": 15.0,
        "shutdown_timeout": 5.0,
        # Short: a fresh broker holds requests for models no connector announced yet for
        # this long (connectors finding a restarted broker), then answers 404.
        "attach_wait_s": 1.0,
    }
    fields.update(overrides)
    settings = BrokerSettings(**fields)
    store = UserStore(Path(settings.users_file))
    key = store.add_user("alice")
    token = store.create_connector_token("peer")
    stop = asyncio.Event()
    bound_future: asyncio.Future[Bound] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_broker(settings, store, stop=stop, started=bound_future.set_result, **app_options)
    )
    done, _ = await asyncio.wait({task, bound_future}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # start-up failed: raise its error
    bound = bound_future.result()
    http = aiohttp.ClientSession()
    rig = Rig(settings, store, bound, key, token, stop, task, bound.app[BROKER], http)
    try:
        yield rig
    finally:
        for client in rig.clients:
            await client.close()
        for peer in rig.peers:
            await peer.close()
        await http.close()
        if not task.done():
            stop.set()
            await asyncio.wait_for(task, 30)


async def read_sse(resp: aiohttp.ClientResponse) -> list[str]:
    """Every non-empty line of an SSE response body, in order."""
    lines = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line:
            lines.append(line)
    return lines


def assert_openai_error(body: Any, code: str | None = None) -> None:
    """``body`` is OpenAI's error shape (and has ``code`` when given)."""
    assert isinstance(body, dict), body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
