"""``remotellm-broker usage`` and ``users quota``: the operator's report and quota edits."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from remotellm_broker import usagedb
from remotellm_broker.cli import main
from remotellm_broker.usagedb import UsageRow
from remotellm_broker.users import UserStore


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def rec(
    when: str, user: str, model: str, connector: str, status: int = 200, tokens: int = 10
) -> UsageRow:
    return UsageRow(
        ts=at(when),
        request_id="r",
        user_id=user,
        key_id="k",
        connector=connector,
        model=model,
        endpoint="/v1/chat/completions",
        status=status,
        prompt_tokens=tokens,
        completion_tokens=2 * tokens,
        ttft_ms=100.0,
        duration_ms=1000.0,
    )


ROWS = [
    rec("2026-11-01T10:00:00", "local:alice", "llama", "gpu1"),
    rec("2026-11-01T11:00:00", "local:alice", "qwen", "gpu2", tokens=1),
    rec("2026-11-02T09:00:00", "gitlab:7", "llama", "gpu1", status=502, tokens=0),
    rec("2026-11-03T23:59:59", "gitlab:7", "llama", "gpu2"),
]


def make_db(path: Path, rows: list[UsageRow]) -> Path:
    conn = usagedb.connect(path)
    usagedb.insert(conn, rows)
    conn.close()
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["usage", *args])
    return result.exit_code, result.output


PERIOD = ("--since", "2026-11-01", "--until", "2026-11-04")


def test_json_report_by_user_sums_requests_errors_and_tokens(tmp_path: Path) -> None:
    db = make_db(tmp_path / "usage.db", ROWS)
    code, out = run("--db", str(db), "--by", "user", "--format", "json", *PERIOD)
    assert code == 0, out
    report = {r["user"]: r for r in json.loads(out)}
    assert report["local:alice"]["requests"] == 2
    assert report["local:alice"]["prompt_tokens"] == 11
    assert report["local:alice"]["completion_tokens"] == 22
    assert report["local:alice"]["total_tokens"] == 33
    assert report["gitlab:7"]["errors"] == 1
    assert report["gitlab:7"]["avg_ttft_ms"] == 100.0


def test_csv_report_by_day_uses_utc_days(tmp_path: Path) -> None:
    db = make_db(tmp_path / "usage.db", ROWS)
    code, out = run("--db", str(db), "--by", "day", "--format", "csv", *PERIOD)
    assert code == 0, out
    table = list(csv.DictReader(io.StringIO(out)))
    assert [(r["day"], r["requests"]) for r in table] == [
        ("2026-11-01", "2"),
        ("2026-11-02", "1"),
        ("2026-11-03", "1"),
    ]


def test_the_period_is_since_inclusive_until_exclusive(tmp_path: Path) -> None:
    db = make_db(tmp_path / "usage.db", ROWS)
    code, out = run(
        "--db", str(db), "--by", "model", "--format", "json",
        "--since", "2026-11-01T11:00", "--until", "2026-11-03",
    )  # fmt: skip
    assert code == 0, out
    assert {r["model"]: r["requests"] for r in json.loads(out)} == {"qwen": 1, "llama": 1}


def test_table_report_by_connector_has_a_total_line(tmp_path: Path) -> None:
    db = make_db(tmp_path / "usage.db", ROWS)
    code, out = run("--db", str(db), "--by", "connector", *PERIOD)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["CONNECTOR", "REQUESTS", "ERRORS"]
    assert lines[1].split()[:2] == ["gpu1", "2"]
    assert lines[-1].split()[:2] == ["TOTAL", "4"]


def test_reports_of_several_replicas_merge(tmp_path: Path) -> None:
    a = make_db(tmp_path / "a.db", ROWS[:2])
    b = make_db(tmp_path / "b.db", ROWS)
    code, out = run("--db", str(a), "--db", str(b), "--by", "user", "--format", "json", *PERIOD)
    assert code == 0, out
    assert {r["user"]: r["requests"] for r in json.loads(out)} == {
        "gitlab:7": 2,
        "local:alice": 4,
    }


def test_the_default_database_is_next_to_the_users_file(tmp_path: Path) -> None:
    make_db(tmp_path / "usage.db", ROWS)
    code, out = run(
        "--users-file", str(tmp_path / "users.yaml"), "--format", "json", "--user", "gitlab:7",
        *PERIOD,
    )  # fmt: skip
    assert code == 0, out
    assert [r["user"] for r in json.loads(out)] == ["gitlab:7"]


def test_a_missing_database_or_a_bad_date_is_a_one_line_error(tmp_path: Path) -> None:
    code, out = run("--db", str(tmp_path / "nope.db"))
    assert code == 1
    assert "no usage database at" in out
    assert not (tmp_path / "nope.db").exists()
    code, out = run("--db", str(tmp_path / "nope.db"), "--since", "last tuesday")
    assert code == 2
    assert "use a date" in out


def test_relative_spans_select_recent_records(tmp_path: Path) -> None:
    import time

    now = time.time()
    rows = [ROWS[0]._replace(ts=now - 3600), ROWS[1]._replace(ts=now - 3 * 86400)]
    db = make_db(tmp_path / "usage.db", rows)
    code, out = run("--db", str(db), "--since", "2d", "--format", "json", "--by", "model")
    assert code == 0, out
    assert [r["model"] for r in json.loads(out)] == ["llama"]


def test_users_quota_sets_and_reverts_the_per_user_quotas(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    UserStore(users).add_user("bob")
    result = CliRunner().invoke(
        main, ["users", "quota", "bob", "--daily", "50000", "--users-file", str(users)]
    )
    assert result.exit_code == 0, result.output
    record = UserStore(users).find_users("bob")[0]
    assert (record.quota_daily_tokens, record.quota_monthly_tokens) == (50000, None)
    listing = CliRunner().invoke(main, ["users", "list", "--users-file", str(users)])
    assert "daily=50000" in listing.output
    CliRunner().invoke(main, ["users", "quota", "bob", "--users-file", str(users)])
    assert UserStore(users).find_users("bob")[0].quota_daily_tokens is None
    bad = CliRunner().invoke(main, ["users", "quota", "nobody", "--users-file", str(users)])
    assert bad.exit_code == 1
    assert "no user named 'nobody'" in bad.output


def test_serve_with_an_unusable_usage_database_stops_with_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "usage.db").mkdir()  # a directory where the database should be
    binary = str(Path(sys.executable).parent / "remotellm-broker")
    ports = ["--port", "0", "--health-port", "0"]
    done = subprocess.run(
        [binary, "serve", *ports, "--users-file", str(tmp_path / "u.yaml")],
        env={**os.environ, "REMOTELLM_BROKER_USAGE_DB": str(tmp_path / "usage.db")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "cannot open the usage database" in done.stderr
    assert "Traceback" not in done.stderr
