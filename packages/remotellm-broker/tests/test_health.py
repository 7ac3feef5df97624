"""The health server: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

from broker_rig import running_broker
from connector_peer import serve_sse

STREAM = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


async def test_health_readiness_and_metrics(tmp_path: Path) -> None:
    async with running_broker(tmp_path) as rig:
        async with rig.http.get(rig.health_url + "/healthz") as resp:
            assert resp.status == 200
        async with rig.http.get(rig.health_url + "/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["connectors"] == 0
        await rig.peer(script=serve_sse(2))
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
        ) as resp:
            await resp.read()
        async with rig.http.get(rig.health_url + "/readyz") as resp:
            body = await resp.json()
            assert body["connectors"] == 1
            assert body["models"] == 1
        async with rig.http.get(rig.health_url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        for name in [
            "remotellm_broker_requests_total",
            "remotellm_broker_ttft_seconds_bucket",
            "remotellm_broker_request_duration_seconds_bucket",
            "remotellm_broker_active_streams",
            "remotellm_broker_queued_requests",
            "remotellm_broker_connectors_connected 1.0",
            "remotellm_broker_rate_limited_total",
            "remotellm_broker_relayed_bytes_total",
            'remotellm_broker_tokens_total{kind="completion"} 2.0',
            "remotellm_broker_user_tokens_total",
        ]:
            assert name in text, name
        assert rig.key not in text


async def test_health_is_not_served_on_the_api_port(tmp_path: Path) -> None:
    async with running_broker(tmp_path) as rig, rig.http.get(rig.url + "/metrics") as resp:
        assert resp.status == 404
