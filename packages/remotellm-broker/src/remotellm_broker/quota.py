"""Per-user token quotas: daily and monthly caps on prompt + completion tokens. Pure.

The counters live in memory (``QuotaLedger``), so admission is two dict lookups and never
waits on the disk. They are loaded from the usage database at start-up (a restart forgets
nothing that was committed) and increased by every finished request, from the usage the
connector reported. Days and months are UTC calendar days and months: a daily quota resets
at 00:00 UTC, a monthly one at 00:00 UTC on the first of the month.

The check is "already used >= limit", made when a request arrives: a request that starts
under its quota runs to its end (a stream is never cut for crossing it), and the next one is
refused with 429 until the reset. Limits come from the user's own ``quota_daily_tokens`` /
``quota_monthly_tokens`` in users.yaml, else the broker-wide settings; 0 means no quota.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = ["Period", "QuotaLedger", "QuotaState", "period_start", "reset_at"]

Period = Literal["daily", "monthly"]


def period_start(period: Period, at: float) -> float:
    """Unix time at which the UTC day or month containing ``at`` began."""
    moment = datetime.fromtimestamp(at, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "monthly":
        start = start.replace(day=1)
    return start.timestamp()


def reset_at(period: Period, at: float) -> float:
    """Unix time of the next reset after ``at``."""
    start = datetime.fromtimestamp(period_start(period, at), UTC)
    if period == "daily":
        return (start + timedelta(days=1)).timestamp()
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month).timestamp()


@dataclass(frozen=True)
class QuotaState:
    """One quota of one user at one moment (what the error and the portal show)."""

    period: Period
    limit: int  # 0: none
    used: int
    resets_at: float

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.used >= self.limit

    @property
    def resets_iso(self) -> str:
        return datetime.fromtimestamp(self.resets_at, UTC).isoformat().replace("+00:00", "Z")


class QuotaLedger:
    """Tokens used per user in the current UTC day and month."""

    def __init__(self) -> None:
        self._day_start = 0.0
        self._month_start = 0.0
        self._daily: dict[str, int] = {}
        self._monthly: dict[str, int] = {}

    def load(self, daily: dict[str, int], monthly: dict[str, int], at: float) -> None:
        """Start from the database's sums for the day and the month containing ``at``."""
        self._day_start = period_start("daily", at)
        self._month_start = period_start("monthly", at)
        self._daily = dict(daily)
        self._monthly = dict(monthly)

    def add(self, user_id: str, tokens: int, at: float) -> None:
        self._roll(at)
        self._daily[user_id] = self._daily.get(user_id, 0) + tokens
        self._monthly[user_id] = self._monthly.get(user_id, 0) + tokens

    def used(self, user_id: str, period: Period, at: float) -> int:
        self._roll(at)
        return (self._daily if period == "daily" else self._monthly).get(user_id, 0)

    def state(self, user_id: str, period: Period, limit: int, at: float) -> QuotaState:
        return QuotaState(period, limit, self.used(user_id, period, at), reset_at(period, at))

    def _roll(self, at: float) -> None:
        # Forward only: a clock stepped back must not wipe what was used today.
        if at >= self._day_start + 86400.0:
            self._day_start = period_start("daily", at)
            self._daily = {}
            month_start = period_start("monthly", at)
            if month_start != self._month_start:
                self._month_start = month_start
                self._monthly = {}
