"""A streamed answer as pre-built SSE frames, for the APIs that name their events.

``_stream`` in ``handlers`` sends ``opening`` with the first of ``count`` ``chunks()``, then
each other chunk, then ``closing``; the fault knobs (``x_fail_after``, ``x_stall_after``) count
those pieces. The chat shape builds its pieces per token for speed; the Responses and Messages
shapes are built here as whole frames (one per delta), since agents' answers are short.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

__all__ = ["FrameShape", "sse_event"]

_encode = msgspec.json.Encoder().encode


def sse_event(name: str | None, data: dict[str, Any]) -> bytes:
    """``event: NAME`` (when named) and ``data: JSON`` and the blank line."""
    head = b"" if name is None else b"event: " + name.encode() + b"\n"
    return head + b"data: " + _encode(data) + b"\n\n"


class FrameShape:
    """Frames already encoded: ``opening``, ``count`` delta frames, ``closing``."""

    __slots__ = ("_deltas", "closing", "count", "opening")

    def __init__(self, opening: bytes, deltas: list[bytes], closing: bytes) -> None:
        self.opening = opening
        self.count = len(deltas)
        self._deltas = deltas
        self.closing = closing

    def chunks(self) -> Iterator[bytes]:
        return iter(self._deltas)
