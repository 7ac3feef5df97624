"""Usage records: one row per finished request, written off the event loop, never the prompt."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from broker_rig import Rig, running_broker, wait_for
from connector_peer import serve_sse
from remotellm_broker import usagedb
from remotellm_broker.metrics import Metrics
from remotellm_broker.usagedb import UsageRow
from remotellm_broker.usagewriter import UsageWriter
from remotellm_protocol import Usage

SECRET_PROMPT = "the-launch-code-is-tangerine-42"


def rows(path: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT * FROM usage ORDER BY ts"))
    finally:
        conn.close()


def files_bytes(where: Path, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in where.glob(pattern))


def row(n: int, *, user: str = "local:a", ts: float | None = None) -> UsageRow:
    return UsageRow(
        ts=time.time() if ts is None else ts,
        request_id=f"req_{n:06d}_" + "x" * 40,
        user_id=user,
        key_id="k1",
        connector="c",
        model="m",
        endpoint="/v1/chat/completions",
        status=200,
        prompt_tokens=2,
        completion_tokens=3,
        ttft_ms=1.5,
        duration_ms=9.0,
    )


async def chat(rig: Rig, content: str = "hi", **headers: str) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "stream": True}
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json=body, headers={**rig.auth, **headers}
    ) as resp:
        await resp.read()
        return resp.status


async def test_a_finished_request_leaves_one_record_with_every_field(tmp_path: Path) -> None:
    async with running_broker(tmp_path) as rig:
        await rig.peer(script=serve_sse(3))
        assert await chat(rig, SECRET_PROMPT, **{"X-Request-ID": "trace-1"}) == 200
        key_id = rig.store.authenticate(rig.key).key_id  # type: ignore[union-attr]
    [rec] = rows(tmp_path / "usage.db")
    assert rec["request_id"] == "trace-1"
    assert (rec["user_id"], rec["key_id"], rec["connector"], rec["model"]) == (
        "local:alice",
        key_id,
        "peer",
        "m",
    )
    assert (rec["endpoint"], rec["status"]) == ("/v1/chat/completions", 200)
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (5, 3)
    assert rec["ttft_ms"] is not None
    assert 0 < rec["ttft_ms"] <= rec["duration_ms"]
    assert abs(rec["ts"] - time.time()) < 60


async def test_records_never_hold_the_prompt_or_the_key(tmp_path: Path) -> None:
    async with running_broker(tmp_path) as rig:
        await rig.peer(script=serve_sse(2))
        for _ in range(3):
            assert await chat(rig, SECRET_PROMPT) == 200
        key = rig.key
    stored = files_bytes(tmp_path, "usage.db*")
    assert len(rows(tmp_path / "usage.db")) == 3
    assert SECRET_PROMPT.encode() not in stored
    assert key.encode() not in stored
    assert (tmp_path / "usage.db").stat().st_mode & 0o077 == 0


async def test_refused_requests_are_recorded_but_unauthenticated_ones_are_not(
    tmp_path: Path,
) -> None:
    async with running_broker(tmp_path) as rig:
        await rig.peer(script=serve_sse(2))
        body = {"model": "nope", "messages": [{"role": "user", "content": "x"}]}
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=body, headers=rig.auth
        ) as resp:
            assert resp.status == 404
        async with rig.http.post(
            rig.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk-" + "0" * 32},
        ) as resp:
            assert resp.status == 401
    [rec] = rows(tmp_path / "usage.db")
    assert (rec["user_id"], rec["status"], rec["model"]) == ("local:alice", 404, None)


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "usage.db"
    for run in range(2):
        (tmp_path / str(run)).mkdir()
        async with running_broker(tmp_path / str(run), usage_db=str(db)) as rig:
            await rig.peer(script=serve_sse(2))
            assert await chat(rig) == 200
            assert await chat(rig) == 200
        assert len(rows(db)) == 2 * (run + 1)


async def test_a_full_database_drops_records_with_one_warning_and_keeps_serving(
    tmp_path: Path,
) -> None:
    db = tmp_path / "usage.db"
    conn = usagedb.connect(db, max_bytes=1024 * 1024)
    n = 0
    for size in (500, 1):  # fill it up to the 1 MB cap, to the last row that fits
        while True:
            try:
                usagedb.insert(conn, [row(n + i, user="local:a") for i in range(size)])
            except sqlite3.OperationalError as exc:
                full = str(exc)
                break
            n += size
    conn.close()
    assert "full" in full
    with capture_logs() as logs:
        async with running_broker(tmp_path, usage_max_db_mb=1, usage_flush_interval_s=0.05) as rig:
            await rig.peer(script=serve_sse(2))
            metrics = rig.state.metrics.registry
            for sent in range(1, 4):
                assert await chat(rig) == 200
                await wait_for(
                    lambda sent=sent: (
                        metrics.get_sample_value(
                            "remotellm_broker_usage_records_dropped_total",
                            {"reason": "write_failed"},
                        )
                        == sent
                    )
                )
    warnings = [e for e in logs if e["event"] == "usage_records_not_written"]
    assert len(warnings) == 1
    assert "full" in warnings[0]["error"]


def test_a_full_queue_drops_records_counts_them_and_warns_once(tmp_path: Path) -> None:
    metrics = Metrics()
    registry = metrics.registry
    writer = UsageWriter(
        usagedb.connect(tmp_path / "u.db"),
        metrics,
        flush_interval_s=0.01,
        queue_max=3,
        retention_s=86400,
    )  # not started: nothing drains the queue
    with capture_logs() as logs:
        for i in range(10):
            writer.submit(row(i))
    dropped = registry.get_sample_value(
        "remotellm_broker_usage_records_dropped_total", {"reason": "queue_full"}
    )
    assert dropped == 7
    assert [(e["event"], e["reason"]) for e in logs] == [("usage_records_dropped", "queue_full")]
    writer.start()
    assert writer.close()
    assert len(rows(tmp_path / "u.db")) == 3


def test_the_writer_commits_in_batches_and_close_writes_the_rest(tmp_path: Path) -> None:
    metrics = Metrics()
    registry = metrics.registry
    writer = UsageWriter(
        usagedb.connect(tmp_path / "u.db"),
        metrics,
        flush_interval_s=30.0,  # nothing is committed by time during this test
        queue_max=10_000,
        retention_s=86400,
    )
    writer.start()
    for i in range(2500):
        writer.submit(row(i))
    # MAX_BATCH (1000) rows make a batch without waiting for the interval.
    deadline = time.monotonic() + 10
    while len(rows(tmp_path / "u.db")) < 2000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(rows(tmp_path / "u.db")) == 2000
    assert writer.close()
    assert len(rows(tmp_path / "u.db")) == 2500
    assert registry.get_sample_value("remotellm_broker_usage_records_written_total") == 2500


def test_records_older_than_the_retention_are_pruned_at_start(tmp_path: Path) -> None:
    conn = usagedb.connect(tmp_path / "u.db")
    now = time.time()
    usagedb.insert(conn, [row(1, ts=now - 10 * 86400), row(2, ts=now - 86400), row(3, ts=now)])
    writer = UsageWriter(
        conn, Metrics(), flush_interval_s=0.01, queue_max=10, retention_s=5 * 86400
    )
    writer.start()
    assert writer.close()
    assert [r["request_id"][:10] for r in rows(tmp_path / "u.db")] == ["req_000002", "req_000003"]


def test_an_unopenable_database_is_a_clear_start_up_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(usagedb.UsageStoreError, match="cannot open the usage database"):
        usagedb.connect(tmp_path / "dir.db")


async def test_connectors_per_model_drop_to_zero_when_the_last_one_leaves(tmp_path: Path) -> None:
    async with running_broker(tmp_path) as rig:
        metrics = rig.state.metrics.registry

        def served(model: str) -> float | None:
            return metrics.get_sample_value("remotellm_broker_model_connectors", {"model": model})

        peer = await rig.peer(models=("m", "n"))
        assert (served("m"), served("n")) == (1, 1)
        await peer.announce(["m"])
        await wait_for(lambda: served("n") == 0)
        await peer.close()
        await wait_for(lambda: served("m") == 0)


async def test_a_stream_observes_its_mean_gap_between_tokens(tmp_path: Path) -> None:
    async with running_broker(tmp_path) as rig:
        usage = Usage(prompt_tokens=1, completion_tokens=5)
        await rig.peer(script=serve_sse(5, gap=0.05, usage=usage))
        assert await chat(rig) == 200
        metrics = rig.state.metrics.registry
        count = metrics.get_sample_value(
            "remotellm_broker_inter_token_seconds_count", {"model": "m"}
        )
        total = metrics.get_sample_value("remotellm_broker_inter_token_seconds_sum", {"model": "m"})
    assert count == 1
    assert total is not None
    assert 0.03 < total < 1.0  # four gaps of ~50 ms, averaged
