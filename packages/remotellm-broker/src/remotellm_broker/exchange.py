"""One API request as the broker tracks it, from arrival to its single log line.

An ``Exchange`` collects what the request log line and the metrics need (who, which model,
which connector, status, time to first token, duration, tokens) and is the handle through
which the broker stops a request from outside: a user blocked in users.yaml, the request
deadline, a shutdown. It never holds the request body, and its API key only for re-checking
it after users.yaml changes; ``log_fields`` leaves both out.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from remotellm_broker.channel import Channel, Cut
from remotellm_protocol import CancelReason, Usage

__all__ = ["CutError", "Exchange", "request_id_for"]

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id_for(headers: Mapping[str, str]) -> str:
    """The client's ``X-Request-ID`` when it is sane (≤ 128 of ``[A-Za-z0-9._-]``), else a
    fresh one: it ends up in logs and in the connector's logs, so it must be harmless."""
    given = headers.get("X-Request-ID")
    if given is not None and _SANE_REQUEST_ID.fullmatch(given):
        return given
    return "req_" + secrets.token_hex(12)


class CutError(Exception):
    """Raised into a request that is waiting for a connector when the broker cuts it."""

    def __init__(self, reason: CancelReason) -> None:
        super().__init__(reason.name)
        self.reason = reason


class Exchange:
    """The broker's record of one API request."""

    __slots__ = (
        "attempts",
        "channel",
        "connector",
        "cut_reason",
        "headers",
        "key_id",
        "method",
        "model",
        "nbytes",
        "path",
        "request_id",
        "secret",
        "started",
        "status",
        "stream",
        "ttft_s",
        "usage",
        "user_id",
        "waiting",
    )

    def __init__(self, request_id: str, method: str, path: str) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.started = time.perf_counter()
        #: Headers every response to this request carries (request id, rate-limit state).
        self.headers: dict[str, str] = {"X-Request-ID": request_id}
        self.user_id: str | None = None
        self.key_id: str | None = None
        self.secret: str | None = None
        #: The model id, once known to be served (safe as a metric label).
        self.model: str | None = None
        self.stream = False
        self.connector: str | None = None
        self.attempts = 0
        self.status = 0
        self.ttft_s: float | None = None
        self.nbytes = 0
        self.usage: Usage | None = None
        self.cut_reason: CancelReason | None = None
        self.channel: Channel | None = None
        #: The future a queued request waits on for a connector slot.
        self.waiting: asyncio.Future[Any] | None = None

    @property
    def duration_s(self) -> float:
        return time.perf_counter() - self.started

    def cut(self, reason: CancelReason) -> None:
        """Stop this request for ``reason`` (first reason wins); safe to call any time."""
        if self.cut_reason is not None:
            return
        self.cut_reason = reason
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(CutError(reason))
        if self.channel is not None:
            self.channel.push(Cut(reason))

    def log_fields(self) -> dict[str, object]:
        """The request log line's fields: identifiers and numbers, never secrets or text."""
        usage = self.usage
        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path[:200],
            "user_id": self.user_id,
            "model": self.model,
            "stream": self.stream,
            "connector": self.connector,
            "attempts": self.attempts,
            "status": self.status,
            "ttft_ms": None if self.ttft_s is None else round(self.ttft_s * 1000, 2),
            "duration_ms": round(self.duration_s * 1000, 2),
            "bytes": self.nbytes,
            "prompt_tokens": None if usage is None else usage.prompt_tokens,
            "completion_tokens": None if usage is None else usage.completion_tokens,
        }
