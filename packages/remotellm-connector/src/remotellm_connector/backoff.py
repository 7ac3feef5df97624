"""When to dial the broker again: a pure policy, no sleeping, no sockets.

Exponential backoff with full jitter (the delay is uniform in ``[0, min(cap, base * 2**n)]``),
so a fleet of connectors that lost the same broker does not come back in lockstep.

What moves ``n``:

- a failed attempt (TCP, TLS, HTTP upgrade, ``hello``/``welcome``) makes it grow;
- a connection that was up and serving resets it: it carried a stream, stayed up for
  ``serving_s`` (10 s), or the broker ended it on purpose (``goaway``, close code 1000/1001: a
  planned restart). The outage that follows is probably a broker restart, so for ``fast_s``
  (30 s) the delay also stays under ``fast_cap`` (2 s): the connector is back within about
  that long of the broker listening again, however many attempts the restart took;
- a short connection that served nothing (the broker accepts and drops us at once: flapping)
  counts as a failure, so a flapping broker is not hammered;
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
        serving_s: float = 10.0,
        fast_cap: float = 2.0,
        fast_s: float = 30.0,
        alert_after: int = 5,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.serving_s = serving_s
        self.fast_cap = fast_cap
        self.fast_s = fast_s
        self.alert_after = alert_after
        self._rng = rng
        self._clock = clock
        #: The exponent of the next delay.
        self.attempts = 0
        #: Failed attempts in a row since the last successful handshake.
        self.failures = 0
        self._up_since: float | None = None
        self._fast_until = float("-inf")

    @property
    def alerting(self) -> bool:
        """True after ``alert_after`` failed attempts in a row, until a handshake succeeds."""
        return self.failures >= self.alert_after

    def ceiling(self) -> float:
        """The largest delay the next call may return."""
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempts, 64))
        if self._clock() < self._fast_until:
            return min(ceiling, self.fast_cap)
        return ceiling

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

    def disconnected(self, *, planned: bool, grow: bool = False, served: bool = False) -> float:
        """A connection ended (``served``: it carried at least one stream): the delay before
        dialling again."""
        up_since, self._up_since = self._up_since, None
        now = self._clock()
        uptime = 0.0 if up_since is None else now - up_since
        if not grow and (planned or served or uptime >= self.serving_s):
            self.attempts = 0
            self._fast_until = now + self.fast_s
            return self._delay()
        delay = self._delay()  # replaced, or flapping: as a failed attempt
        self.attempts += 1
        return delay
