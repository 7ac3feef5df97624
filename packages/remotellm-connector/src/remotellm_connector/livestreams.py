"""``GET /streams`` on the health port: the streams this connector is serving right now.

``remotellm-connector status`` reads it. Each stream shows who (user id and name as the
broker authenticated them), which model, how long it has been running, and how far it got:
SSE events relayed so far (one per token on llama.cpp, Ollama and vLLM) and bytes. Never the
prompt or the answer. The health port binds to loopback by default; like ``/metrics`` it is
for the owner, not for API users.
"""

import time
from collections.abc import Callable

import msgspec
from aiohttp import web

from remotellm_connector.dispatch import Dispatcher

__all__ = ["StreamInfo", "add_streams_route", "live_streams"]


class StreamInfo(msgspec.Struct, frozen=True):
    stream: int
    request_id: str
    user_id: str
    user: str | None
    model: str | None
    endpoint: str
    age_s: float
    events: int
    bytes: int


def live_streams(dispatcher: Dispatcher | None, now: float | None = None) -> list[StreamInfo]:
    """The dispatcher's open streams, oldest first."""
    if dispatcher is None:
        return []
    at = time.monotonic() if now is None else now
    out = [
        StreamInfo(
            stream=s.id,
            request_id=s.open.correlation_id,
            user_id=s.open.principal.user_id,
            user=s.open.principal.name,
            model=s.model,
            endpoint=s.open.path.split("?", 1)[0],
            age_s=round(at - s.born, 3),
            events=s.events,
            bytes=s.nbytes,
        )
        for s in list(dispatcher.streams.values())
    ]
    return sorted(out, key=lambda i: -i.age_s)


StreamsSource = Callable[[], list[StreamInfo]]
_SOURCE: web.AppKey[StreamsSource] = web.AppKey("live_streams")
_encoder = msgspec.json.Encoder()


async def _streams(request: web.Request) -> web.Response:
    streams = request.app[_SOURCE]()
    return web.Response(body=_encoder.encode({"streams": streams}), content_type="application/json")


def add_streams_route(app: web.Application, source: Callable[[], list[StreamInfo]]) -> None:
    """Serve ``source()`` at ``/streams`` on the health app."""
    app[_SOURCE] = source
    app.router.add_get("/streams", _streams)
