"""Bounded waiting: every wait in the suite has a deadline and says what it waited for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["wait_for", "wait_for_async"]


async def wait_for(
    predicate: Callable[[], object], within: float, *, what: str, poll_s: float = 0.02
) -> None:
    """Poll ``predicate`` until true, at most ``within`` seconds (then ``TimeoutError``)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(poll_s)


async def wait_for_async(
    predicate: Callable[[], Awaitable[object]],
    within: float,
    *,
    what: str,
    poll_s: float = 0.05,
) -> None:
    """Like ``wait_for`` with an async predicate (an HTTP probe); its errors count as false."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while True:
        try:
            if await predicate():
                return
        except (OSError, ValueError, AssertionError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(poll_s)
