"""Raw HTTP and SSE on the client side, for assertions the SDKs hide (bytes, comments, events).

The SDKs are the suite's main clients; this is for what they smooth over: whether a keep-alive
comment arrived, whether ``[DONE]`` was sent, whether an error event closed the stream, and
the exact bytes.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["RawResponse", "SseEvent", "parse_sse", "post_raw"]


@dataclass(frozen=True)
class SseEvent:
    event: str | None
    data: str
    comment: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(body: bytes) -> list[SseEvent]:
    """Events and comments of an SSE body, in order (a comment is its own entry)."""
    events: list[SseEvent] = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block:
            continue
        event: str | None = None
        data: list[str] = []
        for line in block.decode("utf-8").split("\n"):
            if line.startswith(":"):
                events.append(SseEvent(None, "", comment=line[1:].strip()))
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data or event:
            events.append(SseEvent(event, "\n".join(data)))
    return events


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    """Each chunk as it arrived: (seconds since the request was sent, bytes)."""

    @property
    def events(self) -> list[SseEvent]:
        return parse_sse(self.body)

    @property
    def data_events(self) -> list[SseEvent]:
        return [e for e in self.events if e.comment is None]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


async def post_raw(
    url: str,
    key: str | None,
    body: bytes | dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    within: float = 60.0,
) -> RawResponse:
    """POST and read the whole response, keeping the chunk boundaries and their timing."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    chunks: list[tuple[float, bytes]] = []
    timeout = aiohttp.ClientTimeout(total=within)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.monotonic()
        # A file object: aiohttp warns (an error here) about big raw bytes blocking the loop.
        payload = io.BytesIO(data) if len(data) > 1024 * 1024 else data
        async with session.post(url, data=payload, headers=sent) as response:
            async for chunk in response.content.iter_any():
                chunks.append((time.monotonic() - start, chunk))
            return RawResponse(
                response.status,
                dict(response.headers),
                b"".join(c for _, c in chunks),
                chunks,
            )
