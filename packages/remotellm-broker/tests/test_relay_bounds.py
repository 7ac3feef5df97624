"""What a connector announces and reports is bounded (issue 11 item 2).

A hostile connector with a valid token announces too many models, absurd model metadata,
model lists at a flood rate, and usage the metrics cannot count; the broker keeps its
bounds, its listing, its log lines and its metrics.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from broker_rig import Rig, running_broker, wait_for
from hostile_connector import HostileConnector, head, hello
from logcapture import records
from remotellm_broker.announce import MAX_MODEL_ID, MAX_REPORTED_TOKENS
from remotellm_protocol import CloseCode, Data, End, Usage


async def _models(rig: Rig) -> list[str]:
    """The models a request can be served by now (models a connector stopped announcing stay
    listed as unavailable for the broker's model memory)."""
    async with rig.http.get(rig.url + "/v1/models", headers=rig.auth) as resp:
        assert resp.status == 200
        return [m["id"] for m in (await resp.json())["data"] if m["available"]]


async def test_a_connector_announces_at_most_max_models_per_connector(
    tmp_path: Path, captured: io.StringIO
) -> None:
    async with running_broker(tmp_path, max_models_per_connector=5) as rig:
        announced = [f"model-{i:03}" for i in range(40)]
        async with HostileConnector(rig.relay_url, rig.token_for("many")) as evil:
            assert await evil.connect(hello("many", announced)) is not None
            await wait_for(lambda: "many" in {c.name for c in rig.state.registry})
            assert await _models(rig) == announced[:5]
            await evil.send_raw({"t": "models", "models": [{"id": f"x{i}"} for i in range(999)]})
            await wait_for(lambda: "x0" in {m.id for m in rig.state.registry.models()})
            assert await _models(rig) == [f"x{i}" for i in range(5)]
    dropped = records(captured, "connector_models_dropped")
    assert [(r["announced"], r["over_limit"]) for r in dropped] == [(40, 35), (999, 994)]


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "x" * (MAX_MODEL_ID + 1)},
        {"id": ""},
        {"id": "evil\nmodel"},
        {"id": "ok-id", "owned_by": "o" * 10_000},
        {"id": "ok-id", "context_length": -1},
        {"id": "ok-id", "context_length": 2**63 - 1},
    ],
    ids=["long-id", "empty-id", "newline-id", "huge-owner", "negative-context", "huge-context"],
)
async def test_a_model_with_unbounded_metadata_is_left_out(
    tmp_path: Path, bad: dict[str, object]
) -> None:
    async with running_broker(tmp_path) as rig:
        evil = HostileConnector(rig.relay_url, rig.token_for("meta"))
        async with evil:
            assert await evil.connect(hello("meta", ["good", bad])) is not None
            await wait_for(lambda: "meta" in {c.name for c in rig.state.registry})
            assert await _models(rig) == ["good"]
            longest = "y" * MAX_MODEL_ID  # the bound itself is fine
            await evil.send_raw({"t": "models", "models": [{"id": longest}, bad]})
            await wait_for(lambda: longest in {m.id for m in rig.state.registry.models()})
            assert await _models(rig) == [longest]


async def test_models_frames_beyond_the_rate_close_the_link_and_reconnects_share_the_bucket(
    tmp_path: Path, captured: io.StringIO
) -> None:
    async with running_broker(tmp_path, model_announcements_per_minute=5) as rig:
        token = rig.token_for("flood")
        async with HostileConnector(rig.relay_url, token) as evil:
            assert await evil.connect(hello("flood")) is not None  # hello: 1 of 5
            await evil.flood({"t": "models", "models": [{"id": "m"}]}, 1_000)
            assert await evil.wait_closed() == CloseCode.POLICY_VIOLATION
            assert "model_announcements_per_minute" in evil.close_reason
        # A reconnect does not refill the bucket: the hello itself is refused.
        async with HostileConnector(rig.relay_url, token) as again:
            assert await again.connect(hello("flood")) is None
            assert again.close_code == CloseCode.POLICY_VIOLATION
        assert "flood" not in {c.name for c in rig.state.registry}
    assert records(captured, "connector_protocol_error")


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -5, "completion_tokens": 3, "total_tokens": -2},
        {"prompt_tokens": 1, "completion_tokens": -1, "total_tokens": 0},
        {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": -(2**63)},
        {"prompt_tokens": MAX_REPORTED_TOKENS + 1, "completion_tokens": 1, "total_tokens": 1},
        {"prompt_tokens": 1, "completion_tokens": 2**64 - 1, "total_tokens": 1},
    ],
    ids=["negative", "negative-completion", "int64-min", "over-bound", "uint64-max"],
)
async def test_bad_reported_usage_is_dropped_and_the_request_is_still_logged_and_counted(
    tmp_path: Path, captured: io.StringIO, usage: dict[str, int]
) -> None:
    async with running_broker(tmp_path) as rig:
        evil = HostileConnector(rig.relay_url, rig.token_for("liar"))
        async with evil:
            assert await evil.connect(hello("liar")) is not None
            await wait_for(lambda: "liar" in {c.name for c in rig.state.registry})

            async def answer() -> None:
                opened = await evil.next_open()
                json_type = [("content-type", "application/json")]
                await evil.send_raw(head(opened.stream, 200, json_type))
                await evil.send(Data(stream=opened.stream, chunk=b'{"choices":[]}'))
                await evil.send_raw({"t": "end", "stream": opened.stream, "usage": usage})

            attacker = asyncio.create_task(answer())
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            headers = {**rig.auth, "X-Request-ID": "usage-liar-1"}
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=body, headers=headers
            ) as resp:
                assert resp.status == 200
                assert await resp.read() == b'{"choices":[]}'
            await attacker
            await wait_for(lambda: records(captured, "request"))
            async with rig.http.get(rig.health_url + "/metrics") as metrics:
                exposition = await metrics.text()
    [line] = [r for r in records(captured, "request") if r["request_id"] == "usage-liar-1"]
    assert line["status"] == 200
    assert line["prompt_tokens"] is None
    assert line["completion_tokens"] is None
    [warning] = records(captured, "connector_usage_dropped")
    assert warning["connector"] == "liar"
    assert warning["request_id"] == "usage-liar-1"
    assert 'remotellm_broker_requests_total{model="m",status="200"} 1.0' in exposition


async def test_plausible_usage_is_kept(tmp_path: Path, captured: io.StringIO) -> None:
    async with running_broker(tmp_path) as rig:
        peer = HostileConnector(rig.relay_url, rig.token_for("honest"))
        async with peer:
            assert await peer.connect(hello("honest")) is not None
            await wait_for(lambda: "honest" in {c.name for c in rig.state.registry})

            async def answer() -> None:
                opened = await peer.next_open()
                await peer.send_raw(head(opened.stream, 200))
                await peer.send(Data(stream=opened.stream, chunk=b"{}"))
                usage = Usage(prompt_tokens=0, completion_tokens=12, total_tokens=12)
                await peer.send(End(stream=opened.stream, usage=usage))

            attacker = asyncio.create_task(answer())
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=body, headers=rig.auth
            ) as resp:
                await resp.read()
            await attacker
    [line] = records(captured, "request")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (0, 12)
    assert not records(captured, "connector_usage_dropped")
