"""The GPU owner's view: the connector's own usage records, ``usage`` and ``status``."""

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from broker_peer import BrokerPeer
from conftest import StartConnector
from remotellm_connector.cli import main
from remotellm_protocol import ErrorCode, Principal

SECRET = "my-secret-prompt-text-7781"
CHAT: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": SECRET}]}
ALICE = Principal(user_id="gitlab:1", key_id="ka", name="alice")
BOB = Principal(user_id="gitlab:2", key_id="kb", name="bob")
MALLORY = Principal(user_id="gitlab:666", key_id="km", name="mallory")


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def stored(db: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT * FROM usage ORDER BY ts"))
    finally:
        conn.close()


def files_bytes(where: Path) -> bytes:
    return b"".join(p.read_bytes() for p in where.glob("usage.db*"))


async def test_every_stream_leaves_a_record_and_the_owner_report_adds_them_up(
    tmp_path: Path, peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector(
        data_dir=str(tmp_path), allowed_users=["gitlab:1", "gitlab:2", "local:carol"]
    )
    conn = await peer.next_connection()
    usage: dict[str, list[int]] = {"gitlab:1": [0, 0], "gitlab:2": [0, 0]}
    for n, who in enumerate([ALICE, ALICE, ALICE, BOB]):
        stream = await conn.open(
            body={**CHAT, "stream": n % 2 == 0, "seed": n}, principal=who, correlation_id=f"r{n}"
        )
        end = await stream.wait_end()
        assert end.error is None
        assert end.usage is not None
        usage[who.user_id][0] += end.usage.prompt_tokens
        usage[who.user_id][1] += end.usage.completion_tokens
    refused = await (await conn.open(body=CHAT, principal=MALLORY)).wait_end()
    assert refused.error is not None
    assert refused.error.code == ErrorCode.POLICY_DENIED
    assert await running.stop() == 0  # the records are written out on the way down

    rows = stored(tmp_path / "usage.db")
    assert [r["request_id"] for r in rows[:4]] == ["r0", "r1", "r2", "r3"]
    assert {r["connector"] for r in rows} == {"test-connector"}
    assert rows[0]["model"] == "demo"
    assert rows[0]["endpoint"] == "/v1/chat/completions"
    assert rows[0]["ttft_ms"] is not None
    assert (rows[-1]["user_id"], rows[-1]["status"]) == ("gitlab:666", 403)
    assert SECRET.encode() not in files_bytes(tmp_path)

    env = {"REMOTELLM_CONNECTOR_ALLOWED_USERS": "gitlab:1,gitlab:2,local:carol"}
    code, out = cli("usage", "--data-dir", str(tmp_path), "--format", "json", env=env)
    assert code == 0, out
    report = {r["user"]: r for r in json.loads(out)}
    for user_id, (prompt, completion) in usage.items():
        assert report[user_id]["prompt_tokens"] == prompt
        assert report[user_id]["completion_tokens"] == completion
        assert report[user_id]["allowed"] == "yes"
    assert report["gitlab:1"]["requests"] == 3
    assert (report["gitlab:666"]["allowed"], report["gitlab:666"]["refused"]) == ("no", 1)
    assert report["local:carol"]["requests"] == 0  # allowed, never came


async def test_the_table_report_shows_the_owners_limits_and_reports_by_model(
    tmp_path: Path, peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector(data_dir=str(tmp_path))
    conn = await peer.next_connection()
    assert (await (await conn.open(body=CHAT, principal=ALICE)).wait_end()).error is None
    await running.stop()
    env = {
        "REMOTELLM_CONNECTOR_USER_RATE_LIMIT_RPM": "30",
        "REMOTELLM_CONNECTOR_USER_MAX_STREAMS": "2",
    }
    code, out = cli("usage", "--data-dir", str(tmp_path), env=env)
    assert code == 0, out
    assert out.splitlines()[0].split()[:4] == ["USER", "NAME", "ALLOWED", "REQUESTS"]
    assert "gitlab:1" in out
    assert "Allowed: every user of the broker. Per user: 30 requests/min (burst 30)" in out
    assert "2 concurrent streams" in out
    assert "None" not in out  # no --max-streams: the cap is derived at start, not "None"
    assert "Whole connector: concurrent streams set at start from the LLM server" in out
    code, out = cli("usage", "--data-dir", str(tmp_path), "--max-streams", "16")
    assert "Whole connector: 16 concurrent streams." in out
    code, out = cli("usage", "--data-dir", str(tmp_path), "--by", "model", "--format", "csv")
    assert code == 0, out
    assert out.splitlines()[1].startswith("demo,1,0,0,")


async def test_status_lists_live_streams_with_user_model_age_and_progress(
    tmp_path: Path, peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector(data_dir=str(tmp_path))
    conn = await peer.next_connection()
    slow = {**CHAT, "stream": True, "x_gap_ms": 200, "max_tokens": 50}
    stream = await conn.open(body=slow, principal=BOB, correlation_id="live-1")
    await stream.wait_for(lambda: len(stream.sse_payloads()) >= 3)
    assert running.connector.health is not None
    port = str(running.connector.health.port)
    code, out = await asyncio.to_thread(cli, "status", "--health-port", port, "--json")
    assert code == 0, out
    [live] = json.loads(out)
    assert (live["user_id"], live["user"], live["model"]) == ("gitlab:2", "bob", "demo")
    assert live["request_id"] == "live-1"
    assert live["events"] >= 3
    assert live["age_s"] > 0
    code, out = await asyncio.to_thread(cli, "status", "--health-port", port)
    assert code == 0, out
    assert "gitlab:2 (bob)" in out
    await conn.cancel(stream)
    await stream.wait_end()
    code, out = await asyncio.to_thread(cli, "status", "--health-port", port)
    assert out.strip() == "no streams in progress"


def test_status_without_a_running_connector_says_so(tmp_path: Path) -> None:
    code, out = cli("status", "--health-port", "1")
    assert code == 1
    assert "no connector answers at http://127.0.0.1:1/streams" in out


def test_usage_without_records_says_where_it_looked(tmp_path: Path) -> None:
    code, out = cli("usage", "--data-dir", str(tmp_path / "none"))
    assert code == 1
    assert "no usage records at" in out
    assert "--data-dir" in out


def test_records_that_cannot_be_written_are_dropped_with_one_warning(tmp_path: Path) -> None:
    import time

    from structlog.testing import capture_logs

    from remotellm_connector.metrics import Metrics
    from remotellm_connector.records import StreamLog, UsageRow

    metrics = Metrics()
    log = StreamLog(
        tmp_path / "usage.db",
        "c",
        metrics.usage_records_dropped,
        retention_s=86400,
        flush_interval_s=0.01,
    )
    log._conn.execute("PRAGMA query_only = ON")  # every write now fails, like a full disk
    row = UsageRow(1e9, "r", "u", "k", "c", "m", "/v1/chat/completions", 200, 1, 2, 3.0, 4.0)

    def dropped() -> float | None:
        return metrics.registry.get_sample_value(
            "remotellm_connector_usage_records_dropped_total", {"reason": "write_failed"}
        )

    with capture_logs() as logs:
        for n in range(3):
            log.add(row)
            deadline = time.monotonic() + 10
            while dropped() != n + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert dropped() == n + 1
        log.close()
    written = [e for e in logs if e["event"] == "usage_records_not_written"]
    assert len(written) == 1  # one line per episode, not per batch
