"""The usage database on disk: one SQLite file (stdlib ``sqlite3``, WAL), its schema, queries.

One row per finished API request: when it ended, who (user id, key id), where it ran
(connector, model, endpoint), how it ended (HTTP status), what it cost (prompt and completion
tokens as the model server reported them), how it felt (time to first token, duration). Never
the prompt, the answer or the key.

Everything here is synchronous and runs on the writer thread (``usagewriter``) or in a CLI
command, never on the event loop. WAL mode lets ``remotellm-broker usage`` read while the
broker writes; ``synchronous=NORMAL`` means a committed batch survives a crash of the process
(kill -9), and only an OS crash or power cut can lose the last commits.

The connector keeps the same table (``remotellm_connector.records``), so one report reads both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

__all__ = [
    "GROUPS",
    "Group",
    "ReportRow",
    "UsageRow",
    "UsageStoreError",
    "connect",
    "daily_by",
    "insert",
    "merge",
    "prune",
    "report",
    "tokens_by_user",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    user_id TEXT,
    key_id TEXT,
    connector TEXT,
    model TEXT,
    endpoint TEXT NOT NULL,
    status INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    ttft_ms REAL,
    duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
CREATE INDEX IF NOT EXISTS usage_user_ts ON usage (user_id, ts);
"""

Group = Literal["user", "connector", "model", "day"]
GROUPS: tuple[Group, ...] = ("user", "connector", "model", "day")
_GROUP_SQL: dict[Group, str] = {
    "user": "coalesce(user_id, '-')",
    "connector": "coalesce(connector, '-')",
    "model": "coalesce(model, '-')",
    "day": "date(ts, 'unixepoch')",
}


class UsageStoreError(Exception):
    """The usage database cannot be opened or read; the message names the file and why."""


class UsageRow(NamedTuple):
    """One finished request, in column order."""

    ts: float
    request_id: str
    user_id: str | None
    key_id: str | None
    connector: str | None
    model: str | None
    endpoint: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    duration_ms: float


class ReportRow(NamedTuple):
    """One line of a report: sums, so rows from several databases merge by adding."""

    key: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    ttft_ms_sum: float
    ttft_count: int
    duration_ms_sum: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def merged(self, other: ReportRow) -> ReportRow:
        return ReportRow(
            self.key,
            self.requests + other.requests,
            self.errors + other.errors,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.ttft_ms_sum + other.ttft_ms_sum,
            self.ttft_count + other.ttft_count,
            self.duration_ms_sum + other.duration_ms_sum,
        )


def connect(path: Path, *, readonly: bool = False, max_bytes: int = 0) -> sqlite3.Connection:
    """Open (creating it unless ``readonly``) the database; raises ``UsageStoreError``.

    ``max_bytes`` caps the file (0: no cap): past it every insert fails as on a full disk.
    """
    try:
        if readonly:
            if not path.exists():
                raise UsageStoreError(f"no usage database at {path}")
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
            conn.execute("PRAGMA query_only = ON")
            return conn
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
        path.chmod(0o600)  # who used what is personal data, like users.yaml
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if max_bytes:
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {max(16, max_bytes // page)}")
        with conn:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except (sqlite3.Error, OSError) as exc:
        raise UsageStoreError(f"cannot open the usage database {path}: {exc}") from None
    return conn


def insert(conn: sqlite3.Connection, rows: Sequence[UsageRow]) -> None:
    """Write ``rows`` in one transaction (all or none); raises ``sqlite3.Error``."""
    with conn:
        conn.executemany("INSERT INTO usage VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Delete the records older than ``before`` (unix time); how many."""
    with conn:
        return conn.execute("DELETE FROM usage WHERE ts < ?", (before,)).rowcount


def tokens_by_user(conn: sqlite3.Connection, since: float) -> dict[str, int]:
    """Prompt + completion tokens per user since ``since`` (the quota counters at start-up)."""
    cur = conn.execute(
        "SELECT user_id, sum(prompt_tokens + completion_tokens) FROM usage "
        "WHERE ts >= ? AND user_id IS NOT NULL GROUP BY user_id",
        (since,),
    )
    return {str(user): int(total or 0) for user, total in cur}


def report(
    conn: sqlite3.Connection,
    by: Group,
    since: float,
    until: float,
    *,
    user_id: str | None = None,
) -> list[ReportRow]:
    """Sums per ``by`` over ``since <= ts < until`` (optionally one user's only)."""
    where = "ts >= ? AND ts < ?"
    params: list[object] = [since, until]
    if user_id is not None:
        where += " AND user_id = ?"
        params.append(user_id)
    sql = (
        f"SELECT {_GROUP_SQL[by]} AS k, count(*), sum(status >= 400), sum(prompt_tokens), "
        "sum(completion_tokens), coalesce(sum(ttft_ms), 0), count(ttft_ms), sum(duration_ms) "
        f"FROM usage WHERE {where} GROUP BY k ORDER BY k"
    )
    try:
        return [ReportRow(str(r[0]), *(r[1:])) for r in conn.execute(sql, params)]
    except sqlite3.Error as exc:
        raise UsageStoreError(f"cannot read the usage database: {exc}") from None


def daily_by(
    conn: sqlite3.Connection, by: Group, since: float, until: float
) -> dict[str, dict[str, int]]:
    """Tokens per UTC day for each ``by`` key (the admin page's per-row sparklines)."""
    sql = (
        f"SELECT {_GROUP_SQL[by]} AS k, date(ts, 'unixepoch') AS d, "
        "sum(prompt_tokens + completion_tokens) FROM usage WHERE ts >= ? AND ts < ? "
        "GROUP BY k, d"
    )
    out: dict[str, dict[str, int]] = {}
    try:
        for key, day, tokens in conn.execute(sql, (since, until)):
            out.setdefault(str(key), {})[str(day)] = int(tokens or 0)
    except sqlite3.Error as exc:
        raise UsageStoreError(f"cannot read the usage database: {exc}") from None
    return out


def merge(reports: Iterable[list[ReportRow]]) -> list[ReportRow]:
    """Several databases' reports (one per broker replica) as one, by key."""
    merged: dict[str, ReportRow] = {}
    for rows in reports:
        for row in rows:
            have = merged.get(row.key)
            merged[row.key] = row if have is None else have.merged(row)
    return [merged[k] for k in sorted(merged)]
