"""What the demo LLM is told (``DemoLLMConfig``) and what it saw (``DemoStats``).

The stats exist so tests and the benchmark can ask the upstream itself whether a disconnect
reached it, or whether all streams really were open at once; a relay's own counters cannot
prove that.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from aiohttp import web

from remotellm_connector.demo_llm.script import Rule

__all__ = ["DEMO_CONFIG", "DEMO_STATS", "DemoLLMConfig", "DemoStats", "Disconnect"]


@dataclass(frozen=True, kw_only=True)
class DemoLLMConfig:
    """Behaviour of the fake server; each request may override the timings (``x_*`` fields).

    The defaults answer at once, which suits tests; the CLI picks a visible cadence instead.
    """

    models: tuple[str, ...] = ("demo",)
    tokens: int = 16
    """Tokens per response when the request sets neither max_tokens nor max_completion_tokens."""
    ttft_s: float = 0.0
    gap_s: float = 0.0
    api_key: str | None = None
    """When set, every /v1 request needs ``Authorization: Bearer <key>`` (or ``api-key:``)."""
    max_model_len: int = 8192
    """Reported by /v1/models as vLLM does, so context-length discovery can be tested."""
    owned_by: str = "remotellm-demo"
    embedding_dim: int = 16
    script: tuple[Rule, ...] = ()
    """Scripted replies, first match wins (see ``script``; ``demo-llm --script FILE``)."""

    def __post_init__(self) -> None:
        if not self.models or any(not m for m in self.models):
            raise ValueError("models: need at least one non-empty model name")
        if self.tokens < 0:
            raise ValueError(f"tokens: must be >= 0, got {self.tokens}")
        if self.ttft_s < 0 or self.gap_s < 0:
            raise ValueError(f"ttft_s/gap_s: must be >= 0, got {self.ttft_s}/{self.gap_s}")
        if self.max_model_len < 1 or self.embedding_dim < 1:
            raise ValueError("max_model_len and embedding_dim must be >= 1")


class Disconnect(NamedTuple):
    """A client that went away before its stream finished, as the upstream noticed it."""

    at: float
    """``time.monotonic()`` when the server noticed."""
    request_id: str | None
    """The request's X-Request-ID header, if any."""
    seed: int | None
    path: str
    tokens_sent: int


@dataclass
class DemoStats:
    """Counters kept by the app; mutated only from the event loop that serves it."""

    requests: Counter[str] = field(default_factory=Counter)
    """Requests seen per route (``/v1/models/{id}`` counts under that pattern)."""
    live_streams: int = 0
    peak_streams: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    """Streams that sent their final chunk and ``[DONE]``."""
    streams_failed: int = 0
    """Streams cut on purpose by ``x_fail_after``."""
    disconnects: list[Disconnect] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    # Mutators: called once per request or stream (never per token), each wakes wait_until.

    def request_seen(self, route: str) -> None:
        self.requests[route] += 1
        self._changed.set()

    def stream_opened(self) -> None:
        self.streams_started += 1
        self.live_streams += 1
        if self.live_streams > self.peak_streams:
            self.peak_streams = self.live_streams
        self._changed.set()

    def stream_completed(self) -> None:
        self.streams_completed += 1
        self._changed.set()

    def stream_failed(self) -> None:
        self.streams_failed += 1
        self._changed.set()

    def disconnected(self, disconnect: Disconnect) -> None:
        self.disconnects.append(disconnect)
        self._changed.set()

    def stream_closed(self) -> None:
        self.live_streams -= 1
        self._changed.set()

    def reset(self) -> None:
        """Forget history between benchmark workloads; streams still open stay counted."""
        self.requests.clear()
        self.peak_streams = self.live_streams
        self.streams_started = self.streams_completed = self.streams_failed = 0
        self.disconnects.clear()
        self._changed.set()

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready copy, served at ``GET /_demo/stats`` for out-of-process clients."""
        return {
            "requests": dict(self.requests),
            "live_streams": self.live_streams,
            "peak_streams": self.peak_streams,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_failed": self.streams_failed,
            "disconnects": [d._asdict() for d in self.disconnects],
        }

    async def wait_until(self, predicate: Callable[[DemoStats], bool]) -> None:
        """Return once ``predicate(self)`` holds; bound it with ``asyncio.timeout``."""
        while not predicate(self):
            self._changed.clear()
            await self._changed.wait()


DEMO_CONFIG = web.AppKey("demo_config", DemoLLMConfig)
DEMO_STATS = web.AppKey("demo_stats", DemoStats)
