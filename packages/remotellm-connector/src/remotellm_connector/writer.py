"""The relay's send path: every frame sent in one event-loop turn leaves in one socket write.

``websockets``' own ``send`` costs, per message: a coroutine with an async context manager, a
``Frame`` object, a ``BytesIO``, a ``getrandom`` system call for the mask and a ``send`` system
call. At 1000 streams that is most of the connector's CPU. Here a frame is framed and masked
in place (a header, a 4-byte key from a per-connection PRNG seeded from ``os.urandom``, the
C ``apply_mask``), appended to a list, and the list goes to the transport once per loop turn
(``call_soon``: no timer, no added delay: it is written as soon as the current wake-up's
callbacks are done). Many streams woken together thus share one system call, and the broker
reads them in one ``recv``.

Only complete, unfragmented binary messages are written, so ``websockets`` keeps owning the
connection's state: its pings, pongs and close frames land between whole messages. Once the
connection is no longer open, ``write`` raises ``RelayGone``. Flow control: when the transport
asks its protocol to pause (the broker reads slower than we write), senders wait in ``drain``.
"""

import asyncio
import os
import random
import struct
from typing import Final

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python build of websockets
    from websockets.utils import apply_mask

__all__ = ["FrameWriter", "RelayGone"]

_BINARY_FIN: Final = 0x82
_MASKED: Final = 0x80
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


class RelayGone(Exception):
    """The relay connection closed: nothing more can be sent on it."""


class FrameWriter:
    """Frames, masks and batches binary messages for one client connection."""

    __slots__ = ("_bits", "_buf", "_loop", "_scheduled", "_transport", "_ws")

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._transport = ws.transport
        self._loop = asyncio.get_running_loop()
        self._buf: list[bytes] = []
        self._scheduled = False
        #: Mask keys: RFC 6455 wants them unpredictable to whoever chooses the payload; a
        #: Mersenne Twister seeded from the OS is that, without a system call per frame.
        self._bits = random.Random(os.urandom(32)).getrandbits

    def write(self, payload: bytes) -> None:
        """Queue one binary message; it is written at the end of this loop turn."""
        if self._ws.protocol.state is not State.OPEN:
            raise RelayGone
        n = len(payload)
        if n < 126:
            head = _SHORT.pack(_BINARY_FIN, _MASKED | n)
        elif n < 65536:
            head = _MEDIUM.pack(_BINARY_FIN, _MASKED | 126, n)
        else:
            head = _LONG.pack(_BINARY_FIN, _MASKED | 127, n)
        key = self._bits(32).to_bytes(4, "big")
        buf = self._buf
        buf.append(head + key)
        buf.append(apply_mask(payload, key))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    async def drain(self) -> None:
        """Wait while the transport's buffer is over its high-water mark."""
        if self._ws.paused:  # websockets sets it in pause_writing
            await self._ws.drain()

    def flush(self) -> None:
        """Write what is queued now (the link calls it before its close frame)."""
        self._scheduled = False
        if not self._buf:
            return
        buf, self._buf = self._buf, []
        if self._ws.protocol.state is State.OPEN and not self._transport.is_closing():
            self._transport.write(b"".join(buf))
