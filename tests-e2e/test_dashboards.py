"""docs/deploy/grafana-dashboard.json and docs/deploy/alerts.yaml: they parse, have the shape
Grafana and Prometheus load, and every metric they name is one the running services export
(scraped from the broker's and the connector's real ``/metrics``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from conftest import Relay

DEPLOY = Path(__file__).resolve().parents[1] / "docs" / "deploy"
_METRIC = re.compile(r"\bremotellm_[a-z0-9_]+\b")
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("_sum", "_count", "_created"),
}
_DURATION = re.compile(r"\d+[smhd]")


def dashboard() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "grafana-dashboard.json").read_text()))


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def exprs() -> list[str]:
    found = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    return found + [rule["expr"] for rule in alert_rules()]


def exposed(text: str) -> set[str]:
    """Every sample name a /metrics text can carry, from its ``# TYPE`` lines."""
    names = set()
    for family, kind in _TYPE_LINE.findall(text):
        base = family.removesuffix("_total") if kind == "counter" else family
        names |= {base + suffix for suffix in _SUFFIXES.get(kind, ("",))}
    return names


def unknown_metrics(expressions: list[str], exported: set[str]) -> set[str]:
    return {name for e in expressions for name in _METRIC.findall(e)} - exported


def test_the_dashboard_has_grafanas_shape() -> None:
    dash = dashboard()
    panels = dash["panels"]
    assert dash["uid"] == "remotellm"
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    titles = " ".join(p["title"] for p in panels).lower()
    for wanted in ("requests", "time to first token", "inter-token", "tokens per second",
                   "in-flight", "429", "connector links"):  # fmt: skip
        assert wanted in titles, wanted


def test_the_alert_rules_have_prometheus_shape_and_cover_the_issue() -> None:
    rules = alert_rules()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert "for" not in rule or _DURATION.fullmatch(rule["for"])
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    names = {r["alert"] for r in rules}
    assert {
        "RemotellmNoConnectorForModel",
        "RemotellmConnectorAlerting",
        "RemotellmHighErrorRatio",
        "RemotellmSlowFirstToken",
        "RemotellmQuotaExhausted",
    } <= names


def test_the_checker_catches_a_metric_nobody_exports() -> None:
    exported = exposed("# TYPE remotellm_broker_requests counter\n")
    assert unknown_metrics(["rate(remotellm_broker_requests_total[5m])"], exported) == set()
    assert unknown_metrics(["remotellm_broker_requestz_total"], exported) == {
        "remotellm_broker_requestz_total"
    }


@pytest.mark.slow
async def test_every_metric_the_dashboard_and_alerts_name_is_exported(relay: Relay) -> None:
    health = relay.connector.connector.health
    assert health is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(relay.broker.health_url + "/metrics") as resp:
            broker = await resp.text()
        async with http.get(f"http://127.0.0.1:{health.port}/metrics") as resp:
            connector = await resp.text()
    exported = exposed(broker) | exposed(connector)
    assert "remotellm_broker_ttft_seconds_bucket" in exported
    assert "remotellm_connector_alerting" in exported
    assert unknown_metrics(exprs(), exported) == set()
