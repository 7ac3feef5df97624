"""The health port: ``/healthz``, ``/readyz`` and ``/metrics`` for supervisors and Prometheus.

It is separate from everything an API user reaches (there is nothing an API user reaches here:
the connector opens no port for traffic) and binds to loopback by default.

- ``/healthz``: 200 while the event loop answers. Restart the process if it does not.
- ``/readyz``: 200 only if the relay is up, the LLM server lists its models, the connector is
  not alerting (5 failed connection attempts in a row) and not shutting down; else 503 with the
  reasons as JSON.
- ``/metrics``: Prometheus text format.
"""

from dataclasses import dataclass, field

import msgspec
from aiohttp import web

from remotellm_connector.metrics import CONTENT_TYPE, Metrics

__all__ = ["HealthServer", "Status", "make_health_app"]


@dataclass
class Status:
    """What readiness is made of; the service and the link keep it current."""

    relay_up: bool = False
    llm_reachable: bool = False
    alerting: bool = False
    draining: bool = False
    details: dict[str, str] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Why the connector is not ready (empty when it is)."""
        out = []
        if not self.relay_up:
            out.append("relay to the broker is down")
        if not self.llm_reachable:
            out.append("LLM server is not reachable")
        if self.alerting:
            out.append("repeated failures to connect to the broker")
        if self.draining:
            out.append("shutting down")
        return out


_STATUS = web.AppKey("status", Status)
_METRICS = web.AppKey("metrics", Metrics)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    status = request.app[_STATUS]
    problems = status.problems()
    body = msgspec.json.encode({"ready": not problems, "problems": problems, **status.details})
    return web.Response(body=body, status=503 if problems else 200, content_type="application/json")


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[_METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def make_health_app(status: Status, metrics: Metrics) -> web.Application:
    """The health application (an app factory, so tests can serve it on their own)."""
    app = web.Application()
    app[_STATUS] = status
    app[_METRICS] = metrics
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


class HealthServer:
    """Serves the health app on ``host:port`` (port 0: any free port, see ``port``)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.host = host
        self.port = port

    async def start(self) -> None:
        """Bind and serve; raises OSError if the port is taken."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()
