"""Metering: one usage record per finished request, and the quota counters (``UsageBook``).

``UsageBook`` is what the request path talks to. ``record`` (called by ``api._finish`` next
to the request's log line) turns the ``Exchange`` into a ``UsageRow`` for the writer thread
and adds its tokens to the user's quota counters; ``check_quota`` (called at admission,
after the rate limit) refuses a user whose daily or monthly tokens are spent. Neither
touches the disk.

Only authenticated requests are recorded: a request without a valid key has no user to
charge, and an attacker must not be able to fill the disk with them (logs and metrics still
count those). The database lives next to users.yaml (``usage.db``) unless ``usage_db``
names another file.

Several replicas (scale-out, issue 14): each replica writes its own database (SQLite is
not shared over a network filesystem safely) and ``remotellm-broker usage --db a --db b``
merges them; quota counters are per replica until the shared state store carries them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from remotellm_broker import usagedb
from remotellm_broker.config import BrokerSettings
from remotellm_broker.exchange import Exchange
from remotellm_broker.metrics import Metrics
from remotellm_broker.openai_errors import OpenAIError
from remotellm_broker.quota import Period, QuotaLedger, QuotaState, period_start
from remotellm_broker.usagedb import UsageRow
from remotellm_broker.usagewriter import UsageWriter

__all__ = ["UsageBook", "usage_db_path"]

_DAY_S = 86400.0
_LABEL: dict[Period, str] = {"daily": "daily", "monthly": "monthly"}


def usage_db_path(settings: BrokerSettings) -> Path:
    """``usage_db`` if set, else ``usage.db`` in the directory of the users file."""
    if settings.usage_db:
        return Path(settings.usage_db)
    return Path(settings.users_file).parent / "usage.db"


class UsageBook:
    """Usage records and quota counters of one broker process."""

    def __init__(self, settings: BrokerSettings, metrics: Metrics) -> None:
        """Open the database, load this day's and month's counters, start the writer.
        Raises ``UsageStoreError`` if the database cannot be opened (start-up stops)."""
        self.settings = settings
        self._metrics = metrics
        self._refused = {
            period: metrics.rate_limited.labels(f"{period}_quota") for period in _LABEL
        }
        self.path = usage_db_path(settings)
        conn = usagedb.connect(self.path, max_bytes=settings.usage_max_db_mb * 1024 * 1024)
        now = time.time()
        self.ledger = QuotaLedger()
        try:
            self.ledger.load(
                usagedb.tokens_by_user(conn, period_start("daily", now)),
                usagedb.tokens_by_user(conn, period_start("monthly", now)),
                now,
            )
        except Exception:
            conn.close()
            raise
        self.writer = UsageWriter(
            conn,
            metrics,
            flush_interval_s=settings.usage_flush_interval_s,
            queue_max=settings.usage_queue_max,
            retention_s=settings.usage_retention_days * _DAY_S,
        )
        self.writer.start()

    def record(self, ex: Exchange) -> None:
        """One finished request (never raises, never blocks)."""
        if ex.user_id is None:
            return
        now = time.time()
        usage = ex.usage
        prompt = usage.prompt_tokens if usage is not None else 0
        completion = usage.completion_tokens if usage is not None else 0
        if prompt or completion:
            self.ledger.add(ex.user_id, prompt + completion, now)
        if ex.stream and completion > 1 and ex.ttft_s is not None and ex.model is not None:
            gap = (ex.duration_s - ex.ttft_s) / (completion - 1)
            self._metrics.inter_token_gap(ex.model, max(gap, 0.0))
        self.writer.submit(
            UsageRow(
                ts=now,
                request_id=ex.request_id,
                user_id=ex.user_id,
                key_id=ex.key_id,
                connector=ex.connector,
                model=ex.model,
                endpoint=ex.path[:200],
                status=ex.status,
                prompt_tokens=prompt,
                completion_tokens=completion,
                ttft_ms=None if ex.ttft_s is None else round(ex.ttft_s * 1000, 2),
                duration_ms=round(ex.duration_s * 1000, 2),
            )
        )

    def quotas(
        self, user_id: str, daily: int | None, monthly: int | None, at: float | None = None
    ) -> tuple[QuotaState, QuotaState]:
        """The user's daily and monthly quota now (``None`` limits: the broker defaults)."""
        now = time.time() if at is None else at
        s = self.settings
        daily = s.quota_daily_tokens if daily is None else daily
        monthly = s.quota_monthly_tokens if monthly is None else monthly
        return (
            self.ledger.state(user_id, "daily", daily, now),
            self.ledger.state(user_id, "monthly", monthly, now),
        )

    def check_quota(self, user_id: str, daily: int | None, monthly: int | None) -> None:
        """Raise the 429 of the first exhausted quota (the one that resets last).

        The common cases cost a dict lookup or two: no quota at all, or quotas not reached;
        reset times are worked out only for a refusal."""
        s = self.settings
        daily = s.quota_daily_tokens if daily is None else daily
        monthly = s.quota_monthly_tokens if monthly is None else monthly
        if not daily and not monthly:
            return
        now = time.time()
        ledger = self.ledger
        if (not daily or ledger.used(user_id, "daily", now) < daily) and (
            not monthly or ledger.used(user_id, "monthly", now) < monthly
        ):
            return
        states = [q for q in self.quotas(user_id, daily, monthly, now) if q.exhausted]
        quota = max(states, key=lambda q: q.resets_at)
        self._refused[quota.period].inc()
        raise quota_error(quota, now)

    async def aclose(self) -> None:
        """Commit what is queued and stop the writer (off the event loop)."""
        await asyncio.to_thread(self.writer.close)


def quota_error(quota: QuotaState, now: float) -> OpenAIError:
    """429 in OpenAI's shape: which quota, how much, when it resets (and ``Retry-After``)."""
    wait = max(1, int(quota.resets_at - now + 0.999))
    return OpenAIError(
        429,
        f"You have used your {_LABEL[quota.period]} quota of {quota.limit:,} tokens "
        f"(prompt + completion; used {quota.used:,}). It resets at {quota.resets_iso} "
        f"(in {_human(wait)}).",
        code=f"{quota.period}_quota_exceeded",
        type_="insufficient_quota",
        # Retry-After of hours already stops openai-python >= 3.x retrying; x-should-retry
        # also stops the SDKs that honour it but not a long Retry-After.
        headers={"Retry-After": str(wait), "x-should-retry": "false"},
    )


def _human(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{max(minutes, 1)}m"
