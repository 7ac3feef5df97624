"""Usage over time for the portal's pages: the numbers from the usage database, and the
geometry of a small bar chart the templates draw as inline SVG (``_chart.html``).

No script and no CDN: the chart is plain SVG in the page (the CSP allows no other origin),
scales with its ``viewBox`` from a desktop down to a 390 px phone, and carries a ``<title>``
per bar for a tooltip and screen readers. The database is read on a worker thread, read-only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from remotellm_broker import usagedb
from remotellm_broker.quota import period_start
from remotellm_broker.usagedb import Group, ReportRow, UsageStoreError

__all__ = [
    "Bar",
    "Chart",
    "daily_chart",
    "read_daily_by",
    "read_report",
    "sparkline",
    "window_days",
]

DAYS = 30


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    #: (y, text) of the horizontal grid lines; (x, text) of the day labels under the bars.
    ticks: list[tuple[float, str]]
    labels: list[tuple[float, str]]
    total: int
    label: str


def window_days(now: float, days: int = DAYS) -> tuple[list[str], float]:
    """The last ``days`` UTC days up to today (ISO dates) and the unix time the first began."""
    today = datetime.fromtimestamp(period_start("daily", now), UTC)
    first = today - timedelta(days=days - 1)
    return [(first + timedelta(days=i)).date().isoformat() for i in range(days)], first.timestamp()


def _short(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1000:
        return f"{n / 1000:.0f}k" if n >= 10_000 else f"{n / 1000:.1f}k"
    return str(n)


def daily_chart(
    days: list[str], rows: list[ReportRow], *, what: str, width: int = 720, height: int = 200
) -> Chart:
    """Bars of total tokens per day over ``days`` (days without records are zero)."""
    by_day = {r.key: r for r in rows}
    values = [by_day[d].total_tokens if d in by_day else 0 for d in days]
    requests = [by_day[d].requests if d in by_day else 0 for d in days]
    left, bottom, top = 48.0, 24.0, 10.0
    plot_w, plot_h = width - left - 4, height - bottom - top
    peak = max(values) or 1
    slot = plot_w / len(days)
    bars = []
    for i, (day, value, count) in enumerate(zip(days, values, requests, strict=True)):
        h = plot_h * value / peak
        bars.append(
            Bar(
                x=round(left + i * slot + slot * 0.15, 1),
                y=round(top + plot_h - h, 1),
                width=round(slot * 0.7, 1),
                height=round(h, 1),
                title=f"{day}: {value:,} tokens in {count:,} requests",
            )
        )
    ticks = [(round(top + plot_h * (1 - f), 1), _short(int(peak * f))) for f in (0, 0.5, 1)]
    labels = [(round(left + i * slot + slot / 2, 1), days[i][5:]) for i in range(0, len(days), 7)]
    total = sum(values)
    label = f"{what}: {total:,} tokens over the last {len(days)} days"
    return Chart(width, height, bars, ticks, labels, total, label)


def sparkline(days: list[str], per_day: dict[str, int], peak: int) -> Chart:
    """A row's tokens per day as tiny bars on a shared scale (``peak``: the table's max)."""
    width, height = 150, 28
    slot = width / len(days)
    top = max(peak, 1)
    bars = []
    for i, day in enumerate(days):
        value = per_day.get(day, 0)
        h = round((height - 2) * value / top, 1)
        bars.append(Bar(round(i * slot, 1), round(height - h, 1), round(slot * 0.75, 1), h,
                        f"{day}: {value:,} tokens"))  # fmt: skip
    total = sum(per_day.get(d, 0) for d in days)
    return Chart(width, height, bars, [], [], total, f"{total:,} tokens over {len(days)} days")


def _read_daily(path: Path, by: Group, since: float) -> dict[str, dict[str, int]]:
    try:
        conn = usagedb.connect(path, readonly=True)
    except UsageStoreError:
        return {}
    try:
        return usagedb.daily_by(conn, by, since, time.time() + 1)
    except UsageStoreError:
        return {}
    finally:
        conn.close()


async def read_daily_by(path: Path, by: Group, since: float) -> dict[str, dict[str, int]]:
    """``usagedb.daily_by`` on a worker thread."""
    return await asyncio.to_thread(_read_daily, path, by, since)


def _read(path: Path, by: Group, since: float, user_id: str | None) -> list[ReportRow]:
    try:
        conn = usagedb.connect(path, readonly=True)
    except UsageStoreError:
        return []  # no request recorded yet
    try:
        return usagedb.report(conn, by, since, time.time() + 1, user_id=user_id)
    except UsageStoreError:
        return []  # locked for longer than the busy timeout: show nothing rather than fail
    finally:
        conn.close()


async def read_report(
    path: Path, by: Group, since: float, user_id: str | None = None
) -> list[ReportRow]:
    """``usagedb.report`` on a worker thread (the event loop never waits on the disk)."""
    return await asyncio.to_thread(_read, path, by, since, user_id)
