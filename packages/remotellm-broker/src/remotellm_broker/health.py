"""The health server: ``/healthz``, ``/readyz`` and ``/metrics`` on a port of their own.

A separate port keeps probes and scrapes off the public API (no keys, no rate limits, never
exposed through the reverse proxy) and lets them answer while the API drains.

* ``/healthz`` — the process is alive and its event loop turns: always 200.
* ``/readyz`` — 200 while the broker takes requests; 503 before it started and from the
  moment shutdown begins, so a load balancer stops sending traffic before the drain.
  The body says how many connectors are connected (zero connectors is still "ready": the
  API answers, with 404/503 per model, and connectors may attach at any time).
* ``/metrics`` — Prometheus text format.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from remotellm_broker.state import BROKER, BrokerState

__all__ = ["MAIN_APP", "create_health_app"]

#: The public app whose state the health app reports on.
MAIN_APP = web.AppKey("remotellm_broker.main_app", web.Application)


def create_health_app(main_app: web.Application) -> web.Application:
    """The health app for ``main_app`` (run it on its own port)."""
    app = web.Application()
    app[MAIN_APP] = main_app
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


def _state(request: web.Request) -> BrokerState | None:
    return request.app[MAIN_APP].get(BROKER)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    state = _state(request)
    if state is None:
        return web.json_response({"ready": False, "reason": "starting"}, status=503)
    body: dict[str, object] = {
        "ready": state.ready,
        "connectors": len(state.registry),
        "models": len(state.registry.model_ids()),
        "in_flight": state.in_flight,
    }
    if not state.ready:
        body["reason"] = "shutting down"
    return web.json_response(body, status=200 if state.ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    state = _state(request)
    if state is None:
        return web.Response(status=503, text="starting\n")
    resp = web.Response(body=state.metrics.exposition())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp
