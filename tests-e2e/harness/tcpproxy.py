"""A TCP proxy between connector and broker that a test can cut, like a network failure.

Stopping a service closes its sockets politely (a WebSocket close frame, a FIN). A dropped
relay in the field is ruder: a NAT forgets the flow, a Wi-Fi link dies, a router reboots.
``cut()`` aborts every proxied connection with a TCP reset and no close frame, which is the
closest loopback gets to that; new connections are accepted again at once (``refuse`` keeps
them out for a while, to hold the connector in its reconnect loop).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["TcpProxy", "tcp_proxy"]

_READ = 64 * 1024


@dataclass
class TcpProxy:
    port: int
    accepted: int = 0
    refusing: bool = False
    _pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)

    def url(self, path: str = "/v1/relay", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def cut(self) -> int:
        """Reset every live connection (both directions); returns how many were cut."""
        pairs = list(self._pairs)
        for client, upstream in pairs:
            for writer in (client, upstream):
                writer.transport.abort()
        self._pairs.clear()
        return len(pairs)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(_READ):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()


@asynccontextmanager
async def tcp_proxy(target_host: str, target_port: int) -> AsyncIterator[TcpProxy]:
    """Listen on 127.0.0.1 (ephemeral port) and forward every connection to the target."""
    proxy = TcpProxy(port=0)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if proxy.refusing:
            client_w.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.transport.abort()
            return
        proxy.accepted += 1
        pair = (client_w, up_w)
        proxy._pairs.add(pair)
        try:
            await asyncio.gather(_pump(client_r, up_w), _pump(up_r, client_w))
        finally:
            proxy._pairs.discard(pair)
            for writer in pair:
                writer.close()

    def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(spawn, "127.0.0.1", 0)
    proxy.port = int(server.sockets[0].getsockname()[1])
    try:
        yield proxy
    finally:
        server.close()
        proxy.cut()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
