"""Per-user request rate limits (token bucket) and concurrent-stream caps.

The broker keys both by user id (``api.py``), not by API key: a user who rotates their key
keeps their bucket and their slots, so rotating in a loop buys nothing. The classes here take
any string as the key.

Pure and synchronous: no I/O, no clock of its own unless given one, so tests drive time by
hand. Not thread-safe by design — the broker calls it from its event loop only.

Token bucket: each user has a bucket holding up to ``burst`` tokens, refilled continuously at
``rpm / 60`` tokens per second; a request takes one token or is refused. Hence over any
window of ``t`` seconds a key gets at most ``burst + rpm / 60 * t`` requests — the property
the tests check. ``0`` for either ``rpm`` or ``burst`` means "no request limit".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateDecision", "RateLimiter", "StreamSlots"]


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one check, with what the ``x-ratelimit-*`` headers report.

    ``limit`` is the bucket capacity (the burst), ``remaining`` the whole tokens left after
    this request, ``reset_s`` the seconds until the bucket is full again, and
    ``retry_after_s`` the seconds until a refused request would be accepted (0 if allowed).
    With no limit configured, ``limit`` is 0 and nothing should be reported.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float

    @property
    def unlimited(self) -> bool:
        return self.limit == 0

    def headers(self) -> dict[str, str]:
        """OpenAI-style ``x-ratelimit-*-requests`` headers, plus ``Retry-After`` on refusal."""
        if self.unlimited:
            return {}
        headers = {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": _duration(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_header)
        return headers

    @property
    def retry_after_header(self) -> int:
        """Whole seconds for ``Retry-After``: rounded up, at least 1."""
        return max(1, math.ceil(self.retry_after_s))


def _duration(seconds: float) -> str:
    # OpenAI writes durations like "6ms", "1.2s", "2m0s"; clients parse these loosely.
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


_UNLIMITED = RateDecision(allowed=True, limit=0, remaining=0, reset_s=0.0, retry_after_s=0.0)


class _Bucket:
    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, tokens: float, updated: float, rate: float, burst: int) -> None:
        self.tokens = tokens
        self.updated = updated
        self.rate = rate  # the limits of the latest check, for prune()
        self.burst = burst


class RateLimiter:
    """Token buckets keyed by user id (any string). Limits come with each call, so per-user
    overrides and config reloads apply at once (a bucket never holds more than the current
    burst)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._checks = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def check(
        self, key_id: str, *, rpm: int, burst: int, now: float | None = None, cost: float = 1.0
    ) -> RateDecision:
        """Take ``cost`` tokens from ``key_id``'s bucket if it has them."""
        if rpm <= 0 or burst <= 0:
            return _UNLIMITED
        if now is None:
            now = self._clock()
        rate = rpm / 60.0
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(burst), now, rate, burst)
        elapsed = max(0.0, now - bucket.updated)  # a clock that steps back refills nothing
        bucket.tokens = min(float(burst), bucket.tokens + elapsed * rate)
        bucket.updated = max(bucket.updated, now)
        bucket.rate, bucket.burst = rate, burst
        allowed = bucket.tokens >= cost
        if allowed:
            bucket.tokens -= cost
        self._checks += 1
        if self._checks % 4096 == 0:
            self.prune(now=now)
        tokens = bucket.tokens
        return RateDecision(
            allowed=allowed,
            limit=burst,
            remaining=int(tokens),
            reset_s=(burst - tokens) / rate,
            retry_after_s=0.0 if allowed else (cost - tokens) / rate,
        )

    def prune(self, *, now: float | None = None) -> int:
        """Forget buckets that would be full by now (a full bucket equals a fresh one),
        so memory follows the number of recently active keys. Returns how many went."""
        if now is None:
            now = self._clock()
        stale = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + max(0.0, now - bucket.updated) * bucket.rate >= bucket.burst
        ]
        for key in stale:
            del self._buckets[key]
        return len(stale)

    def reset(self, key_id: str) -> None:
        """Forget a key's bucket (e.g. after its key was rotated or deleted)."""
        self._buckets.pop(key_id, None)


class StreamSlots:
    """Counts concurrent streams per user id (any string) against a limit given per call
    (0 = unlimited)."""

    def __init__(self) -> None:
        self._active: dict[str, int] = {}

    def try_acquire(self, key_id: str, limit: int) -> bool:
        current = self._active.get(key_id, 0)
        if limit > 0 and current >= limit:
            return False
        self._active[key_id] = current + 1
        return True

    def release(self, key_id: str) -> None:
        """Give one slot back. Releasing a key with no slots is a no-op (never negative)."""
        current = self._active.get(key_id, 0)
        if current <= 1:
            self._active.pop(key_id, None)
        else:
            self._active[key_id] = current - 1

    def active(self, key_id: str) -> int:
        return self._active.get(key_id, 0)

    def total(self) -> int:
        """Streams held across all keys (for metrics)."""
        return sum(self._active.values())
