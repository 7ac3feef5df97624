"""The GPU owner's commands: ``remotellm-connector usage`` and ``remotellm-connector status``.

``usage`` reads the connector's own records (``records``; read-only, safe while it runs) and
answers "who used my GPU" by user, model or day, over any period. By user, the owner's
``allowed_users`` appear next to what each used (an allowed user who used nothing is listed
with zeros; a user no longer allowed is marked), and the per-user limits are printed below.

``status`` asks the running connector's health port (``GET /streams``) for the live streams.
"""

import json
import re
import sqlite3
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import click

from remotellm_connector.config import ConnectorSettings
from remotellm_connector.records import connect

__all__ = ["format_streams", "format_usage", "parse_when", "usage_rows"]

_SPAN = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_GROUP_SQL = {
    "user": "coalesce(user_id, '-')",
    "model": "coalesce(model, '-')",
    "day": "date(ts, 'unixepoch')",
}
GROUPS = tuple(_GROUP_SQL)
_REFUSED = (403, 429, 503)


def parse_when(text: str, now: float) -> float:
    """``30d`` / ``2026-12-01`` / ``2026-12-01T14:00`` (UTC unless an offset is given)."""
    span = _SPAN.fullmatch(text.strip())
    if span:
        return now - int(span.group(1)) * _UNIT_S[span.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use a date (2026-12-01), a time (2026-12-01T14:00) or a span (30d, 12h)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def usage_rows(
    conn: sqlite3.Connection, by: str, since: float, until: float
) -> list[dict[str, Any]]:
    """One dict per group: requests, refused, errors, tokens, average TTFT."""
    key = _GROUP_SQL[by]
    name = ", max(user_name)" if by == "user" else ", NULL"
    refused = ",".join(str(s) for s in _REFUSED)
    sql = (
        f"SELECT {key} AS k{name}, count(*), sum(status IN ({refused})), "
        f"sum(status >= 400 AND status NOT IN ({refused})), sum(prompt_tokens), "
        "sum(completion_tokens), avg(ttft_ms) FROM usage WHERE ts >= ? AND ts < ? "
        "GROUP BY k ORDER BY k"
    )
    rows = []
    for k, user_name, requests, refused_n, errors, prompt, completion, ttft in conn.execute(
        sql, (since, until)
    ):
        rows.append(
            {
                by: k,
                "name": user_name,
                "requests": requests,
                "refused": refused_n,
                "errors": errors,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "avg_ttft_ms": None if ttft is None else round(ttft, 1),
            }
        )
    if by != "user":
        for row in rows:
            del row["name"]
    return rows


def with_policy(rows: list[dict[str, Any]], settings: ConnectorSettings) -> list[dict[str, Any]]:
    """By-user rows with the owner's ``allowed_users`` beside them."""
    allowed = set(settings.allowed_users)
    seen: set[str] = set()
    for row in rows:
        names = {row["user"], row["name"]} - {None}
        seen |= names & allowed
        row["allowed"] = "yes" if not allowed or names & allowed else "no"
    for entry in sorted(allowed - seen):
        rows.append(
            {
                "user": entry,
                "name": None,
                "requests": 0,
                "refused": 0,
                "errors": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "total_tokens": 0,
                "avg_ttft_ms": None,
                "allowed": "yes",
            }
        )
    return rows


def limits_line(settings: ConnectorSettings) -> str:
    s = settings
    rate = "no rate limit"
    if s.user_rate_limit_rpm:
        burst = s.user_rate_limit_burst or s.user_rate_limit_rpm
        rate = f"{s.user_rate_limit_rpm} requests/min (burst {burst})"
    streams = f"{s.user_max_streams} concurrent streams" if s.user_max_streams else "no stream cap"
    who = ", ".join(s.allowed_users) if s.allowed_users else "every user of the broker"
    whole = (
        f"{s.max_streams} concurrent streams"
        if s.max_streams
        else "concurrent streams set at start from the LLM server (2 x llama.cpp's slots, else 256)"
    )
    return f"Allowed: {who}. Per user: {rate}, {streams}. Whole connector: {whole}."


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = [[c.upper() for c in columns]]
    lines += [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def format_usage(rows: list[dict[str, Any]], by: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    columns = [by, *(["name", "allowed"] if by == "user" else [])]
    columns += ["requests", "refused", "errors", "prompt_tokens", "completion_tokens"]
    columns += ["total_tokens", "avg_ttft_ms"]
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    if not rows:
        return "no usage recorded in this period"
    return table(rows, columns)


def format_streams(streams: list[dict[str, Any]]) -> str:
    if not streams:
        return "no streams in progress"
    rows = [
        {
            "user": s["user_id"] + (f" ({s['user']})" if s.get("user") else ""),
            "model": s["model"],
            "age": f"{s['age_s']:.1f}s",
            "events": s["events"],
            "bytes": s["bytes"],
            "endpoint": s["endpoint"],
        }
        for s in streams
    ]
    return table(rows, ["user", "model", "age", "events", "bytes", "endpoint"])


def run_usage(
    settings: ConnectorSettings, db: Any, by: str, since: str, until: str | None, fmt: str
) -> str:
    now = time.time()
    start = parse_when(since, now)
    end = parse_when(until, now) if until else now + 1
    try:
        conn = connect(db, readonly=True)
    except (OSError, sqlite3.Error) as exc:
        raise click.ClickException(
            f"{exc} (the connector keeps them in its data_dir; --data-dir names another)"
        ) from None
    try:
        rows = usage_rows(conn, by, start, end)
    except sqlite3.Error as exc:
        raise click.ClickException(f"cannot read {db}: {exc}") from None
    finally:
        conn.close()
    if by == "user":
        rows = with_policy(rows, settings)
    text = format_usage(rows, by, fmt)
    if by == "user" and fmt == "table":
        text += "\n\n" + limits_line(settings)
    return text


def fetch_streams(settings: ConnectorSettings) -> list[dict[str, Any]]:
    host = settings.health_host
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{settings.health_port}/streams"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(
            f"no connector answers at {url} ({reason}); is it running, and is --health-port "
            "the port it was started with?"
        ) from None
    streams = data.get("streams") if isinstance(data, dict) else None
    if not isinstance(streams, list):
        raise click.ClickException(f"{url} did not answer with a list of streams")
    return streams
