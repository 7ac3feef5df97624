"""The health port: liveness, readiness with reasons, Prometheus metrics."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

from remotellm_connector.health import HealthServer, Status, make_health_app
from remotellm_connector.metrics import Metrics


@pytest.fixture
async def served() -> AsyncIterator[tuple[Status, Metrics, str]]:
    status, metrics = Status(), Metrics()
    server = HealthServer(make_health_app(status, metrics), "127.0.0.1", 0)
    await server.start()
    yield status, metrics, f"http://127.0.0.1:{server.port}"
    await server.stop()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


async def test_healthz_answers_whatever_the_state(served: tuple[Status, Metrics, str]) -> None:
    _, _, base = served
    assert (await get(base + "/healthz"))[0] == 200


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("relay_up", False, "relay to the broker is down"),
        ("llm_reachable", False, "LLM server is not reachable"),
        ("alerting", True, "repeated failures to connect to the broker"),
        ("draining", True, "shutting down"),
    ],
)
async def test_readyz_needs_relay_llm_no_alert_and_no_drain(
    served: tuple[Status, Metrics, str], field: str, value: bool, reason: str
) -> None:
    status, _, base = served
    status.relay_up = status.llm_reachable = True
    code, _, text = await get(base + "/readyz")
    assert code == 200, text
    setattr(status, field, value)
    code, content_type, text = await get(base + "/readyz")
    assert code == 503
    assert content_type == "application/json"
    assert reason in text


async def test_metrics_are_prometheus_text_in_their_own_registry(
    served: tuple[Status, Metrics, str],
) -> None:
    _, metrics, base = served
    metrics.stream_done(
        model="m",
        outcome="ok",
        ttfb=0.1,
        duration=1.0,
        nbytes=100,
        prompt_tokens=5,
        completion_tokens=7,
    )
    code, content_type, text = await get(base + "/metrics")
    assert code == 200
    assert content_type.startswith("text/plain")
    for line in (
        'remotellm_connector_requests_total{model="m",outcome="ok"} 1.0',
        "remotellm_connector_relayed_bytes_total 100.0",
        'remotellm_connector_tokens_total{kind="completion"} 7.0',
        "remotellm_connector_ttfb_seconds_count 1.0",
        'remotellm_connector_upstream_errors_total{code="upstream_timeout"} 0.0',
        "remotellm_connector_active_streams 0.0",
        "remotellm_connector_relay_connected 0.0",
        "remotellm_connector_reconnects_total 0.0",
    ):
        assert line in text, line
    assert "python_gc" not in text  # not the global default registry


async def test_taken_port_raises_oserror() -> None:
    first = HealthServer(make_health_app(Status(), Metrics()), "127.0.0.1", 0)
    await first.start()
    try:
        second = HealthServer(make_health_app(Status(), Metrics()), "127.0.0.1", first.port)
        with pytest.raises(OSError):
            await second.start()
    finally:
        await first.stop()
