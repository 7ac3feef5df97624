"""The broker's application factory.

``create_app`` builds the public app: the OpenAI routes, the relay endpoint, the portal and
the error middleware. Its shared state (``BrokerState`` under the ``BROKER`` key) is created
in a cleanup context, so it exists exactly while the app runs and its background task (the
users.yaml watcher) is stopped with it. ``create_health_app`` (in ``health``) builds the
separate health app that reports on it.

Shutdown (``serve.run_broker``): readiness false and ``goaway`` to every connector, the
listening sockets close, ``drain`` gives in-flight requests ``shutdown_timeout`` to finish and
ends the rest with an error, connectors are closed with 1001; only then does aiohttp's own
cleanup run (it stops reading from every connection, see ``drain``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from remotellm_broker.api import add_api_routes
from remotellm_broker.config import BrokerSettings
from remotellm_broker.cors import add_cors
from remotellm_broker.exchange import request_id_for
from remotellm_broker.health import create_health_app
from remotellm_broker.logs import get_logger
from remotellm_broker.openai_errors import OpenAIError, from_http_exception
from remotellm_broker.portal import add_portal
from remotellm_broker.relay import relay_endpoint
from remotellm_broker.state import BROKER, BrokerState
from remotellm_broker.surfaces import surface_for
from remotellm_broker.users import RELOAD_INTERVAL_S, UserStore
from remotellm_protocol import DEFAULT_HEARTBEAT_S, CancelReason

__all__ = ["BROKER", "create_app", "create_health_app", "drain"]

log = get_logger("remotellm_broker.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    settings: BrokerSettings,
    store: UserStore,
    *,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    handshake_timeout_s: float = 10.0,
    reload_interval_s: float = RELOAD_INTERVAL_S,
) -> web.Application:
    """The public app (API, relay, portal). Run it with ``handler_cancellation=True`` so a
    client that disconnects cancels its request (and the model stops generating)."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_errors])

    async def broker_state(app: web.Application) -> AsyncIterator[None]:
        state = BrokerState(
            settings, store, heartbeat_s=heartbeat_s, handshake_timeout_s=handshake_timeout_s
        )
        app[BROKER] = state
        store.on_change(lambda: _cut_blocked(state))
        store.on_change(lambda: _revoke_links(state))
        state.spawn(_watch_users(state, reload_interval_s))
        yield
        state.begin_shutdown()
        await state.close_links()
        await state.aclose()
        await state.usage.aclose()

    app.cleanup_ctx.append(broker_state)
    app.on_shutdown.append(_on_shutdown)
    add_api_routes(app)
    add_cors(app, settings.cors_allow_origins)
    app.router.add_get("/v1/relay", relay_endpoint)
    add_portal(app, settings, store, model_ids=lambda: _model_ids(app))
    return app


def _model_ids(app: web.Application) -> list[str]:
    state = app.get(BROKER)
    return [] if state is None else [m.id for m in state.registry.models()]


def _cut_blocked(state: BrokerState) -> None:
    cut = state.cut_blocked()
    if cut:
        log.info("blocked_user_requests_ended", requests=cut)


def _revoke_links(state: BrokerState) -> None:
    state.revoke_links()  # one warning line per closed link


async def _watch_users(state: BrokerState, interval: float) -> None:
    """Pick up users.yaml edits (CLI or by hand) without a restart; the store calls the
    ``on_change`` callbacks (which end blocked users' requests) after each reload."""
    while True:
        await asyncio.sleep(interval)
        try:
            state.store.reload_if_changed()
        except Exception as exc:  # a broken file keeps the last good state; say why
            log.warning("users_file_not_reloaded", error=str(exc)[:300])


async def drain(state: BrokerState, grace_s: float) -> None:
    """Let in-flight requests finish within ``grace_s``, end the rest, close connectors.

    Call it after ``state.begin_shutdown()`` and after the listening sockets closed, but
    *before* the aiohttp runner's cleanup: the runner's first step (``pre_shutdown``) makes
    every open connection ignore incoming bytes, WebSockets included, so connectors could
    no longer deliver the responses being drained.
    """
    state.begin_shutdown()
    if not await state.wait_idle(grace_s):
        log.warning("shutdown_timeout_reached", in_flight=state.in_flight)
        state.cut_all(CancelReason.SHUTDOWN)
        await state.wait_idle(2.0)
    await state.close_links()


async def _on_shutdown(app: web.Application) -> None:
    """Fallback for runners other than ``serve.run_broker``: nothing can be drained any more
    at this point (see ``drain``), so requests still in flight end with an error now."""
    state = app.get(BROKER)
    if state is not None:
        await drain(state, 0.0)


def _is_api(request: web.Request) -> bool:
    path = request.path
    return (
        path.startswith("/v1/")
        or path == "/v1"
        or path == "/openapi.json"
        or request.match_info.http_exception is not None
    )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors for unknown paths and methods and anything unexpected, in the shape of the API
    the path belongs to (OpenAI's; Anthropic's under ``/v1/messages``), plus an
    ``X-Request-ID`` on every response."""
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not _is_api(request):
            exc.headers.setdefault("X-Request-ID", request_id_for(request.headers))
            raise
        resp = _refused(request, from_http_exception(exc, request.method, request.path))
    except OpenAIError as err:
        resp = _refused(request, err)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        if not _is_api(request):
            raise
        log.exception("unhandled_error", method=request.method[:20], path=request.path[:200])
        error = OpenAIError(500, "The server had an error while processing your request.")
        resp = _refused(request, error)
    if not resp.prepared and "X-Request-ID" not in resp.headers:
        resp.headers["X-Request-ID"] = request_id_for(request.headers)
    return resp


def _refused(request: web.Request, error: OpenAIError) -> web.Response:
    """The error response of a request no route handled, and its log line."""
    request_id = request_id_for(request.headers)
    resp = surface_for(request.path).response(error)
    resp.headers["X-Request-ID"] = request_id
    log.info(
        "request",
        request_id=request_id,
        method=request.method[:20],
        path=request.path[:200],
        status=error.status,
    )
    return resp
