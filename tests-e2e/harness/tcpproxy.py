"""A TCP proxy between connector and broker that a test can cut, like a network failure.

Stopping a service closes its sockets politely (a WebSocket close frame, a FIN). A dropped
relay in the field is ruder: a NAT forgets the flow, a Wi-Fi link dies, a router reboots.
``cut()`` aborts every proxied connection with a TCP reset and no close frame, which is the
closest loopback gets to that; new connections are accepted again at once (``refuse`` keeps
them out for a while, to hold the connector in its reconnect loop).

Two slower faults: ``throttle_bps`` limits the client-to-target direction (the connector's
answers) to that many bytes per second, like a saturated uplink (the client side's small
receive buffer makes TCP acknowledge at that pace too, as a real slow wire does);
``blackhole`` stops forwarding in both directions without closing anything, like a link
that silently died (clearing it lets the held bytes through).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["TcpProxy", "tcp_proxy"]

_READ = 64 * 1024
_CLIENT_RCVBUF = 2 * 1024
_READER_LIMIT = 1024


@dataclass
class TcpProxy:
    port: int
    accepted: int = 0
    refusing: bool = False
    #: Bytes per second client -> target (None: as fast as loopback).
    throttle_bps: int | None = None
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._flowing.set()

    @property
    def blackhole(self) -> bool:
        return not self._flowing.is_set()

    @blackhole.setter
    def blackhole(self, on: bool) -> None:
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

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


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    proxy: TcpProxy,
    *,
    upstream: bool,
) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while True:
            rate = proxy.throttle_bps if upstream else None
            data = await reader.read(max(1, rate // 10) if rate else _READ)
            if not data:
                break
            await proxy._flowing.wait()  # blackholed: hold the bytes, nothing in or out
            writer.write(data)
            await writer.drain()
            if rate:
                await asyncio.sleep(len(data) / rate)
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
            await asyncio.gather(
                _pump(client_r, up_w, proxy, upstream=True),
                _pump(up_r, client_w, proxy, upstream=False),
            )
        finally:
            proxy._pairs.discard(pair)
            for writer in pair:
                writer.close()

    def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # A small receive buffer on the client side, as on a real wire: TCP acknowledges the
    # client's bytes only as the (throttled) proxy reads them, instead of the kernel taking
    # megabytes at loopback speed and acknowledging them long before they go on.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _CLIENT_RCVBUF)
    # An Ethernet-sized segment (loopback's is 64 KiB): window updates then come as the proxy
    # reads, every ~1.4 KB, not once half the receive buffer is free.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
    listener.bind(("127.0.0.1", 0))
    # ``limit`` bounds the StreamReader's own buffer too (it pauses reading at twice it), so
    # a throttled pump leaves the bytes in the kernel rather than slurping them.
    server = await asyncio.start_server(spawn, sock=listener, limit=_READER_LIMIT)
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
