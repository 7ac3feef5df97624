"""The relay's send path: every frame sent in one event-loop turn leaves in one socket write.

``websockets``' own ``send`` costs, per message: a coroutine with an async context manager, a
``Frame`` object, a ``BytesIO``, a ``getrandom`` system call for the mask and a ``send`` system
call. At 1000 streams that is most of the connector's CPU. Here a frame is framed and masked
in place (a header, a 4-byte key cut from a block of ``os.urandom``, the
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
_KEY_BLOCK: Final = 4 * 1024


class RelayGone(Exception):
    """The relay connection closed: nothing more can be sent on it."""


class FrameWriter:
    """Frames, masks and batches binary messages for one client connection."""

    __slots__ = (
        "_buf",
        "_keys",
        "_keys_at",
        "_loop",
        "_scheduled",
        "_transport",
        "_ws",
        "written",
    )

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._transport = ws.transport
        self._loop = asyncio.get_running_loop()
        self._buf: list[bytes] = []
        self._scheduled = False
        #: Mask keys: RFC 6455 (5.3) wants them from a strong source of entropy. They are cut
        #: from os.urandom in blocks of 1024 keys: one system call per 1024 frames, not per frame.
        self._keys = b""
        self._keys_at = 0
        #: Bytes handed to the transport so far (liveness measures the peer's progress).
        self.written = 0

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
        at = self._keys_at
        if at >= len(self._keys):
            self._keys, at = os.urandom(_KEY_BLOCK), 0
        key = self._keys[at : at + 4]
        self._keys_at = at + 4
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
            data = b"".join(buf)
            self.written += len(data)
            self._transport.write(data)
