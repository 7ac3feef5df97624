"""When to dial the broker again: a pure policy, no sleeping, no sockets.

Exponential backoff with full jitter (the delay is uniform in ``[0, min(cap, base * 2**n)]``),
so a fleet of connectors that lost the same broker does not come back in lockstep.

What moves ``n``:

- a failed attempt (TCP, TLS, HTTP upgrade, ``hello``/``welcome``) makes it grow;
- a connection that stayed up for ``stable_s`` (a minute), or that the broker ended on purpose
  (``goaway``, close code 1000/1001: a planned restart), resets it, so the connector is back
  within about ``base`` seconds;
- any other end of a connection (killed mid-stream after a few seconds) leaves it as it is:
  a broker that accepts and then drops us is not hammered faster, nor punished harder;
- ``grow=True`` on a disconnect counts it as a failure (another connector took our name).

The caller owns the clock and the random source, so tests drive the policy step by step.
"""

import random
import time
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Reconnect delays and the failure count behind the "cannot reach the broker" alert."""

    def __init__(
        self,
        *,
        base: float = 1.0,
        cap: float = 30.0,
        stable_s: float = 60.0,
        alert_after: int = 5,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.stable_s = stable_s
        self.alert_after = alert_after
        self._rng = rng
        self._clock = clock
        #: The exponent of the next delay.
        self.attempts = 0
        #: Failed attempts in a row since the last successful handshake.
        self.failures = 0
        self._up_since: float | None = None

    @property
    def alerting(self) -> bool:
        """True after ``alert_after`` failed attempts in a row, until a handshake succeeds."""
        return self.failures >= self.alert_after

    def ceiling(self) -> float:
        """The largest delay the next call may return."""
        return min(self.cap, self.base * 2.0 ** min(self.attempts, 64))

    def _delay(self) -> float:
        return self._rng() * self.ceiling()

    def failed(self) -> float:
        """An attempt to connect failed: the delay before the next one; the next one grows."""
        self.failures += 1
        delay = self._delay()
        self.attempts += 1
        return delay

    def connected(self) -> None:
        """The handshake succeeded: the failure streak (and any alert) is over."""
        self.failures = 0
        self._up_since = self._clock()

    def disconnected(self, *, planned: bool, grow: bool = False) -> float:
        """A connection ended: the delay before dialling again."""
        up_since, self._up_since = self._up_since, None
        uptime = 0.0 if up_since is None else self._clock() - up_since
        if grow:
            delay = self._delay()
            self.attempts += 1
            return delay
        if planned or uptime >= self.stable_s:
            self.attempts = 0
        return self._delay()
