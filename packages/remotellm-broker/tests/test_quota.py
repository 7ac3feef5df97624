"""Token quotas: counted from the usage the connector reports, enforced at admission."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest

from broker_rig import Rig, assert_openai_error, read_sse, running_broker, wait_for
from connector_peer import serve_sse
from remotellm_broker.quota import QuotaLedger, period_start, reset_at
from remotellm_protocol import Usage

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_days_and_months_are_utc_calendar_periods() -> None:
    at = ts("2026-12-31T23:59:59")
    assert period_start("daily", at) == ts("2026-12-31T00:00:00")
    assert period_start("monthly", at) == ts("2026-12-01T00:00:00")
    assert reset_at("daily", at) == ts("2027-01-01T00:00:00")
    assert reset_at("monthly", at) == ts("2027-01-01T00:00:00")
    assert reset_at("monthly", ts("2027-02-10T12:00:00")) == ts("2027-03-01T00:00:00")


def test_the_ledger_starts_a_new_day_and_a_new_month_at_midnight_utc() -> None:
    ledger = QuotaLedger()
    ledger.load({"u": 10}, {"u": 100}, ts("2026-11-30T12:00:00"))
    ledger.add("u", 5, ts("2026-11-30T23:59:59"))
    assert ledger.used("u", "daily", ts("2026-11-30T23:59:59")) == 15
    assert ledger.used("u", "monthly", ts("2026-11-30T23:59:59")) == 105
    ledger.add("u", 1, ts("2026-12-01T00:00:00"))
    assert ledger.used("u", "daily", ts("2026-12-01T00:00:01")) == 1
    assert ledger.used("u", "monthly", ts("2026-12-01T00:00:01")) == 1
    ledger.add("u", 2, ts("2026-12-02T08:00:00"))
    assert ledger.used("u", "daily", ts("2026-12-02T08:00:00")) == 2
    assert ledger.used("u", "monthly", ts("2026-12-02T08:00:00")) == 3


async def stream_chat(rig: Rig) -> tuple[int, list[str], dict[str, str], object]:
    async with rig.http.post(rig.url + "/v1/chat/completions", json=CHAT, headers=rig.auth) as r:
        if r.status != 200:
            return r.status, [], dict(r.headers), await r.json()
        return r.status, await read_sse(r), dict(r.headers), None


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path) as rig:
        # Every request costs 5 prompt + 3 completion = 8 tokens.
        await rig.peer(script=serve_sse(3, usage=Usage(prompt_tokens=5, completion_tokens=3)))
        yield rig


async def test_the_request_that_reaches_the_quota_is_refused_not_the_one_before(rig: Rig) -> None:
    rig.store.set_quotas("alice", daily_tokens=16, monthly_tokens=None)
    assert (await stream_chat(rig))[0] == 200  # used 0 -> 8
    assert (await stream_chat(rig))[0] == 200  # used 8 -> 16
    status, _, headers, body = await stream_chat(rig)  # used 16 >= 16
    assert status == 429
    assert_openai_error(body, "daily_quota_exceeded")
    assert body["error"]["type"] == "insufficient_quota"  # type: ignore[index]
    message = body["error"]["message"]  # type: ignore[index]
    midnight = datetime.fromtimestamp(reset_at("daily", time.time()), UTC)
    assert "daily quota of 16 tokens" in message
    assert midnight.strftime("%Y-%m-%dT%H:%M:%SZ") in message
    retry_after = int(headers["Retry-After"])
    assert abs(retry_after - (midnight.timestamp() - time.time())) < 5
    assert headers["x-should-retry"] == "false"


async def test_a_stream_that_crosses_its_quota_finishes_and_the_next_is_refused(rig: Rig) -> None:
    rig.store.set_quotas("alice", daily_tokens=10, monthly_tokens=None)
    assert (await stream_chat(rig))[0] == 200  # 0 -> 8, under 10
    status, lines, _, _ = await stream_chat(rig)  # 8 -> 16: crosses the quota mid-way
    assert status == 200
    assert lines[-1] == "data: [DONE]"
    assert (await stream_chat(rig))[0] == 429


async def test_the_monthly_quota_is_enforced_and_named(rig: Rig) -> None:
    rig.store.set_quotas("alice", daily_tokens=1000, monthly_tokens=8)
    assert (await stream_chat(rig))[0] == 200
    status, _, _, body = await stream_chat(rig)
    assert status == 429
    assert_openai_error(body, "monthly_quota_exceeded")
    first_of_next_month = datetime.fromtimestamp(reset_at("monthly", time.time()), UTC)
    assert first_of_next_month.day == 1
    assert first_of_next_month.strftime("%Y-%m-%dT00:00:00Z") in body["error"]["message"]  # type: ignore[index]
    metrics = rig.state.metrics.registry
    assert (
        metrics.get_sample_value("remotellm_broker_rate_limited_total", {"limit": "monthly_quota"})
        == 1
    )


async def test_the_openai_sdk_raises_a_rate_limit_error_without_retrying(rig: Rig) -> None:
    rig.store.set_quotas("alice", daily_tokens=8, monthly_tokens=None)
    assert (await stream_chat(rig))[0] == 200
    client = rig.client(max_retries=2)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "daily_quota_exceeded"
    refused = rig.state.metrics.registry.get_sample_value(
        "remotellm_broker_rate_limited_total", {"limit": "daily_quota"}
    )
    assert refused == 1  # one attempt: no SDK retry of a request refused for hours
    assert len(rig.peers[0].opens) == 1  # the refused request never reached the connector


async def test_broker_wide_default_quotas_apply_and_a_user_zero_lifts_them(
    tmp_path: Path,
) -> None:
    async with running_broker(tmp_path, quota_daily_tokens=8) as rig:
        await rig.peer(script=serve_sse(3, usage=Usage(prompt_tokens=5, completion_tokens=3)))
        assert (await stream_chat(rig))[0] == 200
        assert (await stream_chat(rig))[0] == 429
        rig.store.set_quotas("alice", daily_tokens=0, monthly_tokens=None)
        assert (await stream_chat(rig))[0] == 200


async def test_quota_edits_in_users_yaml_by_another_process_apply_within_a_second(
    rig: Rig,
) -> None:
    assert (await stream_chat(rig))[0] == 200
    other = type(rig.store)(rig.store.path)  # the CLI's own store, as another process has
    other.set_quotas("alice", daily_tokens=8, monthly_tokens=None)
    await wait_for(lambda: rig.store.get_user("local:alice").quota_daily_tokens == 8)  # type: ignore[union-attr]
    assert (await stream_chat(rig))[0] == 429


async def test_used_tokens_survive_a_broker_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "usage.db")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    usage = Usage(prompt_tokens=5, completion_tokens=3)
    async with running_broker(tmp_path / "a", usage_db=db, quota_daily_tokens=16) as rig:
        await rig.peer(script=serve_sse(3, usage=usage))
        assert (await stream_chat(rig))[0] == 200
        assert (await stream_chat(rig))[0] == 200
    async with running_broker(tmp_path / "b", usage_db=db, quota_daily_tokens=16) as rig:
        await rig.peer(script=serve_sse(3, usage=usage))
        assert (await stream_chat(rig))[0] == 429
