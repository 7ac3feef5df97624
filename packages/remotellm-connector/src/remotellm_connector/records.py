"""The GPU owner's usage records: one SQLite row per stream this connector served.

The connector sees every stream its GPU serves, from every broker replica, so its own records
answer "who used my GPU" without asking the broker. The table has the broker's schema
(``remotellm_broker.usagedb``): ``ts``, ``request_id`` (the broker's correlation id),
``user_id``, ``key_id``, ``connector`` (this connector's name), ``model``, ``endpoint``,
``status``, ``prompt_tokens``, ``completion_tokens``, ``ttft_ms`` (time to the LLM's first
byte), ``duration_ms``, plus ``user_name`` (``allowed_users`` may name users). Never the
prompt or the answer.

``StreamLog.add`` is one ``put_nowait`` on a bounded queue; a writer thread commits batches
(WAL, ``synchronous=NORMAL``) at most ``FLUSH_INTERVAL_S`` apart, deletes records older than
the retention hourly, and drops rows it cannot write (disk full) or queue (queue full) with
one warning per episode and ``remotellm_connector_usage_records_dropped_total``. The event
loop never waits on the disk. The database is ``usage.db`` in the connector's ``data_dir``.
"""

import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Final, NamedTuple

import structlog
from prometheus_client import Counter

from remotellm_protocol import ErrorCode, Open, StreamError, Usage

__all__ = ["FLUSH_INTERVAL_S", "StreamLog", "UsageRow", "connect"]

log = structlog.get_logger("remotellm_connector.records")

FLUSH_INTERVAL_S: Final = 1.0
MAX_BATCH: Final = 1000
QUEUE_MAX: Final = 100_000
PRUNE_EVERY_S: Final = 3600.0
_STOP: Final = object()

#: The status the client sees for a stream that ended with a wire error before a head.
_ERROR_STATUS: Final = {
    ErrorCode.POLICY_DENIED: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.GOING_AWAY: 503,
    ErrorCode.CANCELLED: 499,
    ErrorCode.UPSTREAM_TIMEOUT: 504,
    ErrorCode.BAD_REQUEST: 400,
}

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
    duration_ms REAL NOT NULL,
    user_name TEXT
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
CREATE INDEX IF NOT EXISTS usage_user_ts ON usage (user_id, ts);
"""


_INSERT: Final = "INSERT INTO usage VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"


class UsageRow(NamedTuple):
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
    #: The user's name as the broker sent it (``allowed_users`` may list names).
    user_name: str | None = None


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (or, unless ``readonly``, create) the database; raises ``OSError`` or
    ``sqlite3.Error`` saying why."""
    if readonly:
        if not path.exists():
            raise FileNotFoundError(f"no usage records at {path}")
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        conn.execute("PRAGMA query_only = ON")
        return conn
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
    path.chmod(0o600)  # who used the GPU is personal data
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    with conn:
        conn.executescript(_SCHEMA)
        conn.execute("PRAGMA user_version = 1")
    return conn


class StreamLog:
    """The writer thread and its queue; ``start`` once, ``close`` once."""

    def __init__(
        self,
        path: Path,
        name: str,
        dropped: Counter,
        *,
        retention_s: float,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        queue_max: int = QUEUE_MAX,
    ) -> None:
        self.path = path
        self.name = name
        self._conn = connect(path)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_max)
        self._interval = flush_interval_s
        self._retention_s = retention_s
        self._next_prune = 0.0
        self._overflowing = False
        self._failing = False
        self._dropped_queue = dropped.labels("queue_full")
        self._dropped_write = dropped.labels("write_failed")
        self._thread = threading.Thread(target=self._run, name="usage-records", daemon=True)
        self._thread.start()

    def add(self, row: UsageRow) -> None:
        """Queue ``row``; never blocks, never raises."""
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self._dropped_queue.inc()
            if not self._overflowing:
                self._overflowing = True
                log.warning("usage_records_dropped", reason="queue full")
            return
        self._overflowing = False

    def stream_done(
        self,
        frame: Open,
        *,
        model: str | None,
        status: int | None,
        error: StreamError | None,
        usage: Usage | None,
        ttfb_s: float | None,
        duration_s: float,
    ) -> None:
        """Record one finished stream (the dispatcher calls it next to its log line)."""
        if error is not None and (status is None or error.code == ErrorCode.CANCELLED):
            status = _ERROR_STATUS.get(ErrorCode.parse(error.code), 502)
        self.add(
            UsageRow(
                ts=time.time(),
                request_id=frame.correlation_id[:128],
                user_id=frame.principal.user_id,
                key_id=frame.principal.key_id,
                connector=self.name,
                model=None if model is None else model[:200],
                endpoint=frame.path.split("?", 1)[0][:200],
                status=status or 0,
                prompt_tokens=usage.prompt_tokens if usage is not None else 0,
                completion_tokens=usage.completion_tokens if usage is not None else 0,
                ttft_ms=None if ttfb_s is None else round(ttfb_s * 1000, 2),
                duration_ms=round(duration_s * 1000, 2),
                user_name=frame.principal.name,
            )
        )

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop (blocking: call it via ``asyncio.to_thread``)."""
        if self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                return
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._conn.close()

    def _run(self) -> None:
        self._prune()
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self._interval
            while len(batch) < MAX_BATCH:
                left = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)  # type: ignore[arg-type]
            if time.time() >= self._next_prune:
                self._prune()

    def _write(self, batch: list[UsageRow]) -> None:
        try:
            with self._conn:
                self._conn.executemany(_INSERT, batch)
        except sqlite3.Error as exc:
            self._dropped_write.inc(len(batch))
            if not self._failing:
                self._failing = True
                log.warning("usage_records_not_written", error=str(exc)[:200], rows=len(batch))
            return
        if self._failing:
            self._failing = False
            log.info("usage_records_written_again")

    def _prune(self) -> None:
        now = time.time()
        self._next_prune = now + PRUNE_EVERY_S
        try:
            with self._conn:
                self._conn.execute("DELETE FROM usage WHERE ts < ?", (now - self._retention_s,))
        except sqlite3.Error as exc:
            log.warning("usage_records_not_pruned", error=str(exc)[:200])
