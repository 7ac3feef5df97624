"""Is the relay link alive? Judged by progress, so a slow link is not taken for a dead one.

A WebSocket ping travels behind every byte already queued on the connection: in our write
buffer, in the kernel's send queue, in flight. On a link throttled to 4 KB/s, a few hundred
KiB of answer stream ahead of it take minutes, so "no pong within ``ping_timeout``" (what
``websockets``' own keepalive checks) cuts a link that is working. Here a link is alive
while either

- a pong came back (the idle case: nothing queued, the ping goes out at once), or
- the broker keeps acknowledging our bytes: what we handed the socket minus what is still
  queued in the transport and in the kernel (``TIOCOUTQ`` on Linux) grows, or
- the broker's messages keep arriving (its pong may be queued behind a large upload);

and it is dead when neither happened for ``ping_interval + ping_timeout`` (a blackhole, a
hung broker). Pings go out every ``ping_interval`` from their own task, so a send that waits
for the buffer never delays the verdict.
"""

import asyncio
import contextlib
import struct
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection

__all__ = ["Liveness", "unsent_in_kernel"]

_INT = struct.Struct("i")

try:  # Linux and most Unixes; elsewhere only our own buffer is counted
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - Windows
    _OUTQ = None


def unsent_in_kernel(fileno: int) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the peer (0 if unknown)."""
    if _OUTQ is None:  # pragma: no cover - Windows
        return 0
    try:
        return int(_INT.unpack(fcntl.ioctl(fileno, _OUTQ, b"\0" * 4))[0])
    except OSError:
        return 0


class Liveness:
    """Watches one connection; ``run`` returns why it is dead (or is cancelled with it)."""

    def __init__(
        self,
        ws: ClientConnection,
        written: Callable[[], int],
        received: Callable[[], int],
        *,
        ping_interval: float,
        ping_timeout: float,
    ) -> None:
        self._ws = ws
        self._written = written
        self._received = received
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._loop = asyncio.get_running_loop()
        self._alive_at = self._loop.time()
        sock = ws.transport.get_extra_info("socket")
        self._fileno = sock.fileno() if sock is not None else -1

    def acknowledged(self) -> int:
        """Bytes of ours the peer has taken: written minus still queued here and in the kernel."""
        queued = self._ws.transport.get_write_buffer_size()
        if self._fileno >= 0:
            queued += unsent_in_kernel(self._fileno)
        return self._written() - queued

    async def run(self) -> str:
        limit = self.ping_interval + self.ping_timeout
        tick = min(self.ping_interval, self.ping_timeout) / 2
        acked, received = self.acknowledged(), self._received()
        pinger: asyncio.Task[None] | None = None
        pinged_at = float("-inf")
        try:
            while True:
                await asyncio.sleep(tick)
                now = self._loop.time()
                now_acked, now_received = self.acknowledged(), self._received()
                if now_acked > acked or now_received != received:
                    acked, received, self._alive_at = max(acked, now_acked), now_received, now
                if (pinger is None or pinger.done()) and now - pinged_at >= self.ping_interval:
                    pinger, pinged_at = asyncio.ensure_future(self._ping()), now
                if now - self._alive_at > limit:
                    return f"no pong and no data acknowledged for {now - self._alive_at:.0f} s"
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(BaseException):
                    await pinger

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):  # closed: the receive loop notices and ends
            pong = await self._ws.ping()
            await pong
            self._alive_at = self._loop.time()
