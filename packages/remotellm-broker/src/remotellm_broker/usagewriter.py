"""Writes usage rows to SQLite on a thread of its own, in batches: the event loop never waits.

``submit`` is what a request costs: one ``put_nowait`` on a bounded queue. The writer thread
blocks on that queue (an idle broker wakes it never), gathers what arrives within
``flush_interval_s`` of the first row (or ``MAX_BATCH`` rows) and commits them in one
transaction. A process killed with SIGKILL loses what had not been committed yet: at most
the rows of the last ``flush_interval_s`` (docs/usage.md).

Trouble never reaches the requests:

- queue full (the disk is slower than the traffic, or the thread is stuck): the row is
  dropped, counted in ``remotellm_broker_usage_records_dropped_total{reason="queue_full"}``,
  and one warning line marks the start of the episode;
- a batch that cannot be written (disk full, the ``usage_max_db_mb`` cap, I/O error): its
  rows are dropped and counted (``reason="write_failed"``), one warning line per episode, and
  one info line when writes succeed again.

Records older than the retention are deleted once an hour, by the same thread.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Final

from remotellm_broker import usagedb
from remotellm_broker.logs import get_logger
from remotellm_broker.metrics import Metrics
from remotellm_broker.usagedb import UsageRow

__all__ = ["MAX_BATCH", "UsageWriter"]

log = get_logger("remotellm_broker.usage")

MAX_BATCH: Final = 1000
PRUNE_EVERY_S: Final = 3600.0
_STOP: Final = object()


class UsageWriter:
    """The writer thread and its queue; ``start`` once, ``close`` once."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        metrics: Metrics,
        *,
        flush_interval_s: float,
        queue_max: int,
        retention_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_max)
        self._interval = flush_interval_s
        self._retention_s = retention_s
        self._clock = clock
        self._next_prune = 0.0
        self._overflowing = False
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self.written = metrics.usage_records_written
        dropped = metrics.usage_records_dropped
        self._dropped_queue = dropped.labels("queue_full")
        self._dropped_write = dropped.labels("write_failed")

    def start(self) -> None:
        self._thread.start()

    def submit(self, row: UsageRow) -> None:
        """Queue ``row`` for the next batch; never blocks, never raises."""
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self._dropped_queue.inc()
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "usage_records_dropped", reason="queue_full", queue_max=self._queue.maxsize
                )
            return
        self._overflowing = False

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued, stop the thread, close the database; False if it hung.

        Blocking: call it from a thread (``asyncio.to_thread``) or at exit."""
        if self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                return False
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        self._conn.close()
        return True

    # -- the thread ---------------------------------------------------------------------

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
            if self._clock() >= self._next_prune:
                self._prune()

    def _write(self, batch: list[UsageRow]) -> None:
        try:
            usagedb.insert(self._conn, batch)
        except sqlite3.Error as exc:
            self._dropped_write.inc(len(batch))
            if not self._failing:
                self._failing = True
                log.warning("usage_records_not_written", error=str(exc)[:200], rows=len(batch))
            return
        self.written.inc(len(batch))
        if self._failing:
            self._failing = False
            log.info("usage_records_written_again")

    def _prune(self) -> None:
        now = self._clock()
        self._next_prune = now + PRUNE_EVERY_S
        try:
            deleted = usagedb.prune(self._conn, now - self._retention_s)
        except sqlite3.Error as exc:
            log.warning("usage_records_not_pruned", error=str(exc)[:200])
            return
        if deleted:
            log.info("usage_records_pruned", deleted=deleted)
