"""The GPU owner's policy, enforced here whatever the broker allows: pure, clock injected.

The broker authenticates users and forwards who asked in ``open.principal``; the owner decides
who may use this GPU and how much. A refusal is a ``StreamError`` the broker turns into an HTTP
status: ``POLICY_DENIED`` (403), ``RATE_LIMITED`` (429 + ``Retry-After``) or ``OVERLOADED``
(503, tried on another connector first).

Concurrency is checked before the token bucket, so a request refused for being one stream too
many does not also spend one of the user's requests.
"""

import time
from collections.abc import Callable, Iterable

from remotellm_protocol import ErrorCode, Principal, StreamError

__all__ = ["Policy"]

#: Retry hint when a concurrency cap refuses: streams usually end within seconds.
CONCURRENCY_RETRY_AFTER_S = 1.0
#: Buckets kept before full (idle) ones are forgotten.
_PRUNE_AT = 4096


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Policy:
    """Admits or refuses each stream; ``release`` must follow every admission."""

    def __init__(
        self,
        *,
        allowed_users: Iterable[str] = (),
        rpm: int = 0,
        burst: int = 0,
        user_max_streams: int = 0,
        max_streams: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed = frozenset(allowed_users)
        self.rate = rpm / 60.0
        self.capacity = float(burst or rpm)
        self.user_max_streams = user_max_streams
        self.max_streams = max_streams
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._streams: dict[str, int] = {}
        self.active = 0

    def admit(self, who: Principal) -> StreamError | None:
        """None if ``who`` may start a stream now (counted until ``release``), else why not."""
        # By id only: a name is display text, and a GitLab account can be called anything.
        if self.allowed and who.user_id not in self.allowed:
            return StreamError(
                code=ErrorCode.POLICY_DENIED,
                message="the owner of this connector does not allow this user",
            )
        if self.active >= self.max_streams:
            return StreamError(
                code=ErrorCode.OVERLOADED,
                message=f"the connector is at its limit of {self.max_streams} streams",
                retry_after=CONCURRENCY_RETRY_AFTER_S,
            )
        mine = self._streams.get(who.user_id, 0)
        if self.user_max_streams and mine >= self.user_max_streams:
            return StreamError(
                code=ErrorCode.RATE_LIMITED,
                message=f"at most {self.user_max_streams} concurrent streams per user here",
                retry_after=CONCURRENCY_RETRY_AFTER_S,
            )
        if self.rate:
            wait = self._take(who.user_id)
            if wait:
                return StreamError(
                    code=ErrorCode.RATE_LIMITED,
                    message="per-user request rate limit of this connector reached",
                    retry_after=round(wait, 3),
                )
        self._streams[who.user_id] = mine + 1
        self.active += 1
        return None

    def release(self, who: Principal) -> None:
        """The stream ``admit`` let in has ended."""
        self.active -= 1
        left = self._streams.get(who.user_id, 1) - 1
        if left > 0:
            self._streams[who.user_id] = left
        else:
            self._streams.pop(who.user_id, None)

    def _take(self, user_id: str) -> float:
        """Spend one token: 0.0 if there was one, else seconds until there will be."""
        now = self._clock()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[user_id] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget users whose bucket has refilled: a new bucket starts full anyway."""
        for user_id, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * self.rate >= self.capacity:
                del self._buckets[user_id]
