"""``remotellm-broker usage``: who used how much, by user, connector, model or day.

Reads the usage database read-only (safe while the broker writes: WAL), so it can run on the
broker's machine at any time. Several ``--db`` (one per broker replica) are merged into one
report. Periods are ``--since``/``--until``: a date (``2026-12-01``, UTC midnight), a time
(``2026-12-01T14:00``, UTC unless it names an offset), or a span back from now (``30d``,
``12h``, ``90m``).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click

from remotellm_broker import usagedb
from remotellm_broker.usagedb import GROUPS, ReportRow, UsageStoreError

__all__ = ["format_report", "parse_when", "usage"]

_SPAN = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
COLUMNS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "avg_ttft_ms",
    "avg_duration_ms",
)


def parse_when(text: str, now: float) -> float:
    """``30d`` / ``2026-12-01`` / ``2026-12-01T14:00[+02:00]`` → unix time (UTC default)."""
    text = text.strip()
    span = _SPAN.fullmatch(text)
    if span:
        return now - int(span.group(1)) * _UNIT_S[span.group(2)]
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use a date (2026-12-01), a time (2026-12-01T14:00) or a span (30d, 12h)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _values(row: ReportRow) -> list[object]:
    ttft = round(row.ttft_ms_sum / row.ttft_count, 1) if row.ttft_count else None
    duration = round(row.duration_ms_sum / row.requests, 1) if row.requests else None
    return [
        row.requests,
        row.errors,
        row.prompt_tokens,
        row.completion_tokens,
        row.total_tokens,
        ttft,
        duration,
    ]


def format_report(rows: Sequence[ReportRow], by: str, fmt: str) -> str:
    """The report as an aligned table (with a total line), JSON (a list) or CSV."""
    header = [by, *COLUMNS]
    if fmt == "json":
        return json.dumps(
            [dict(zip(header, [r.key, *_values(r)], strict=True)) for r in rows], indent=2
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([r.key, *_values(r)] for r in rows)
        return out.getvalue().rstrip("\n")
    total = ReportRow("TOTAL", 0, 0, 0, 0, 0.0, 0, 0.0)
    for row in rows:
        total = total.merged(row)
    table = [[h.upper() for h in header]]
    for row in [*rows, total] if rows else []:
        table.append([_cell(v) for v in [row.key, *_values(row)]])
    if not rows:
        return "no usage recorded in this period"
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@click.command()
@click.option(
    "--by",
    type=click.Choice(GROUPS),
    default="user",
    show_default=True,
    help="Group the report by this.",
)
@click.option("--since", default="30d", show_default=True, help="Start: 30d, 2026-12-01, …")
@click.option("--until", default=None, help="End (exclusive) [default: now].")
@click.option("--user", "user_id", default=None, help="Only this user id (gitlab:42, local:bob).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@click.option(
    "--db",
    "dbs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="REMOTELLM_BROKER_USAGE_DB",
    help="Usage database(s); repeat to merge replicas [default: usage.db next to the users file].",
)
@click.option(
    "--users-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("users.yaml"),
    envvar="REMOTELLM_BROKER_USERS_FILE",
    show_default="./users.yaml",
    help="Where the default usage database is looked for.",
)
def usage(
    by: usagedb.Group,
    since: str,
    until: str | None,
    user_id: str | None,
    fmt: str,
    dbs: tuple[Path, ...],
    users_file: Path,
) -> None:
    """Report usage: requests, errors, tokens, TTFT by user, connector, model or day."""
    now = time.time()
    start = parse_when(since, now)
    end = parse_when(until, now) if until else now + 1
    if end <= start:
        raise click.BadParameter("--until must be after --since")
    paths = list(dbs) or [users_file.parent / "usage.db"]
    reports = []
    for path in paths:
        try:
            conn = usagedb.connect(path, readonly=True)
        except UsageStoreError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            reports.append(usagedb.report(conn, by, start, end, user_id=user_id))
        except UsageStoreError as exc:
            raise click.ClickException(f"{path}: {exc}") from None
        finally:
            conn.close()
    click.echo(format_report(usagedb.merge(reports), by, fmt))
