"""Bounds on what a connector tells the broker: the models it announces, and token counts.

A connector token holder may announce models and report usage; it may not grow the broker's
memory, its ``/v1/models`` listing or its metrics without bound, nor erase a request's audit
line with a count the metrics library refuses. So:

- a model list (``hello`` or ``models``) keeps at most ``max_models`` entries; an entry whose
  id is empty, longer than ``MAX_MODEL_ID`` or not printable, or whose metadata is out of
  range, is left out, and one warning line says how many were;
- announcements (``hello`` and each ``models`` frame) are rate limited per connector token
  by a token bucket that survives reconnects, so neither a flood of ``models`` frames nor a
  reconnect loop re-indexes the registry more than ``per_minute`` times a minute;
- reported usage is kept only when every count is an int in ``[0, MAX_REPORTED_TOKENS]``;
  otherwise it is dropped with a warning, and the request is logged and counted without it.

Pure apart from the log lines: no aiohttp.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from remotellm_broker.logs import get_logger
from remotellm_broker.ratelimit import RateLimiter
from remotellm_protocol import ModelInfo, Usage

__all__ = [
    "MAX_CONTEXT_LENGTH",
    "MAX_MODEL_ID",
    "MAX_OWNED_BY",
    "MAX_REPORTED_TOKENS",
    "Announcements",
    "checked_usage",
]

log = get_logger("remotellm_broker.announce")

#: Longest model id a connector may announce (ids show up in URLs, logs and metric labels).
MAX_MODEL_ID = 256
#: Longest ``owned_by``.
MAX_OWNED_BY = 128
#: Largest ``context_length`` (2**31 - 1; a billion-token window is not a real model).
MAX_CONTEXT_LENGTH = 2**31 - 1
#: Largest token count one request may report (prompt, completion or total).
MAX_REPORTED_TOKENS = 100_000_000


class Announcements:
    """Model announcements of connectors: their size, their content, their rate."""

    def __init__(
        self,
        *,
        max_models: int,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_models = max_models
        self.per_minute = per_minute
        self._buckets = RateLimiter(clock)

    def allow(self, token_name: str) -> bool:
        """Take one announcement from ``token_name``'s bucket; False when it is empty."""
        return self._buckets.check(token_name, rpm=self.per_minute, burst=self.per_minute).allowed

    def bounded(self, models: Sequence[ModelInfo], *, connector: str) -> list[ModelInfo]:
        """The entries of ``models`` the broker keeps (see the module docstring)."""
        kept = [m for m in models if _acceptable(m)]
        invalid = len(models) - len(kept)
        over = max(len(kept) - self.max_models, 0)
        if invalid or over:
            log.warning(
                "connector_models_dropped",
                connector=connector,
                announced=len(models),
                invalid=invalid,
                over_limit=over,
                max_models=self.max_models,
            )
        return kept[: self.max_models]


def _acceptable(model: ModelInfo) -> bool:
    mid, owner, length = model.id, model.owned_by, model.context_length
    return (
        0 < len(mid) <= MAX_MODEL_ID
        and mid.isprintable()
        and (owner is None or (len(owner) <= MAX_OWNED_BY and owner.isprintable()))
        and (length is None or 0 < length <= MAX_CONTEXT_LENGTH)
    )


def checked_usage(usage: Usage | None, *, connector: str | None, request_id: str) -> Usage | None:
    """``usage`` when every count is plausible, else None (with a warning line)."""
    if usage is None:
        return None
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    if all(0 <= n <= MAX_REPORTED_TOKENS for n in counts):
        return usage
    log.warning(
        "connector_usage_dropped",
        connector=connector,
        request_id=request_id,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )
    return None
