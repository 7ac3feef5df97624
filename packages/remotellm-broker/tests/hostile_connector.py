"""A hostile connector: a valid connector token, then whatever the test tells it to send.

``ConnectorPeer`` behaves: it drives a real ``ConnectorSession``, so it can only send what
the protocol allows. ``HostileConnector`` plays the attacker instead. It dials ``/v1/relay``
over 127.0.0.1 with a real token, and then

- ``send`` encodes any frame with the protocol's codec, skipping every session rule (a head
  with status 204, data beyond the window, a negative usage, a second hello ...);
- ``send_raw`` sends any msgpack it is given, a dict encoded as is or bytes verbatim, so a
  test can put values the protocol's frame types could not even hold;
- ``flood`` sends one message many times, as fast as the socket takes them.

Everything the broker sends back is decoded into ``received`` (``opens`` is a queue of the
``open`` frames, to answer them), and the close code and reason are kept, so a test asserts
what the broker did to it. The same class serves the e2e suite (it needs only aiohttp and
remotellm-protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec

from remotellm_protocol import SUBPROTOCOLS, Frame, Open, Welcome, decode, encode

__all__ = ["HostileConnector", "head", "hello"]


def hello(
    name: str = "hostile", models: Sequence[str | dict[str, Any]] = ("m",), **fields: Any
) -> dict[str, Any]:
    """A raw ``hello`` map: model ids become ``{"id": ...}``; ``fields`` add or override."""
    infos = [m if isinstance(m, dict) else {"id": m} for m in models]
    return {"t": "hello", "name": name, "version": "evil", "models": infos, "max_streams": 8,
            **fields}  # fmt: skip


def head(stream: int, status: int, headers: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """A raw ``head`` map with any status and any headers (a header is ``[name, value]``)."""
    return {"t": "head", "stream": stream, "status": status, "headers": [list(h) for h in headers]}


class HostileConnector:
    """A real WebSocket client on the relay that sends whatever it is told."""

    def __init__(self, relay_url: str, token: str) -> None:
        self.relay_url = relay_url
        self.token = token
        self.received: list[Frame] = []
        self.opens: asyncio.Queue[Open] = asyncio.Queue()
        self.welcome: Welcome | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.closed = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._welcomed: asyncio.Future[None] | None = None

    async def __aenter__(self) -> HostileConnector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def dial(self) -> None:
        """Open the WebSocket (raises ``aiohttp.WSServerHandshakeError`` on a refusal)."""
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await self._http.ws_connect(
                self.relay_url,
                headers={"Authorization": f"Bearer {self.token}"},
                protocols=SUBPROTOCOLS,
                autoping=True,
            )
        except BaseException:
            await self._http.close()
            raise
        self._reader = asyncio.create_task(self._read())

    async def connect(self, first: dict[str, Any] | bytes | None = None) -> Welcome | None:
        """Dial, send ``first`` (a valid ``hello`` by default) and wait for ``welcome``;
        None when the broker closed the socket instead (see ``close_code``)."""
        if self._ws is None:
            await self.dial()
        self._welcomed = asyncio.get_running_loop().create_future()
        await self.send_raw(hello() if first is None else first)
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait(
                {self._welcomed, closed}, timeout=5, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closed.cancel()
        return self.welcome

    async def send(self, frame: Frame) -> None:
        """Encode ``frame`` with the protocol's codec, without any session check."""
        await self.send_raw(encode(frame))

    async def send_raw(self, message: dict[str, Any] | bytes) -> None:
        """Send ``message``: bytes as they are, anything else msgpack-encoded as it is."""
        assert self._ws is not None
        data = message if isinstance(message, bytes) else msgspec.msgpack.encode(message)
        await self._ws.send_bytes(data)

    async def flood(self, message: dict[str, Any] | bytes, times: int) -> int:
        """Send ``message`` up to ``times`` times; how many went before the socket closed."""
        sent = 0
        for _ in range(times):
            if self.closed.is_set():
                break
            try:
                await self.send_raw(message)
            except (ConnectionError, RuntimeError):
                break
            sent += 1
        return sent

    async def next_open(self, within: float = 5.0) -> Open:
        return await asyncio.wait_for(self.opens.get(), within)

    async def wait_closed(self, within: float = 5.0) -> int | None:
        """Wait until the broker closes the socket; its close code."""
        await asyncio.wait_for(self.closed.wait(), within)
        return self.close_code

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            while True:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    self._on_frame(decode(msg.data))
                    continue
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    self.close_reason = msg.extra or ""
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    break
        finally:
            self.close_code = ws.close_code
            self.closed.set()

    def _on_frame(self, frame: Frame) -> None:
        self.received.append(frame)
        if isinstance(frame, Welcome):
            self.welcome = frame
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_result(None)
        elif isinstance(frame, Open):
            self.opens.put_nowait(frame)

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._http is not None:
            await self._http.close()
