"""The API routes: OpenAI (completions, chat, embeddings, model listing, OpenAPI), the
OpenAI Responses API and the Anthropic Messages API.

Every route runs inside ``_api_route``, which gives the request its ``Exchange`` (request
id, the record for the log line and metrics), turns any ``OpenAIError`` into the error shape
of the route's API (``surfaces``: OpenAI's, or Anthropic's on ``/v1/messages``), and writes
exactly one log line when the request ends, however it ends.

The order of checks for a relayed request is cheapest-first and never reads a body the
client may not send: size (413) → key (401/403) → rate limit (429) → body read within the
broker-wide budget and the body timeout (503, 408, 413) → body (400) → model (404) → endpoint
offered by a connector of the model (400) → concurrent streams (429) → relay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from remotellm_broker.bodies import parse_body
from remotellm_broker.credentials import MAX_API_KEY_CHARS, api_key, plausible
from remotellm_broker.exchange import Exchange, request_id_for
from remotellm_broker.forward import relay_request
from remotellm_broker.intake import CLOSES, HeldBody, answer_and_close, read_body
from remotellm_broker.logs import get_logger
from remotellm_broker.openai_errors import (
    OpenAIError,
    from_http_exception,
    model_not_found,
    retry_after_header,
)
from remotellm_broker.state import BROKER, BrokerState
from remotellm_broker.stored import StoredResponses
from remotellm_broker.stored_access import STORED, remembering, stored_for
from remotellm_broker.surfaces import (
    ANTHROPIC,
    OPENAI,
    RESPONSES,
    Surface,
    endpoint_for,
    missing_endpoint,
    surface_for,
)
from remotellm_broker.users import KeyIdentity
from remotellm_protocol import Principal

__all__ = ["RELAYED_PATHS", "add_api_routes"]

log = get_logger("remotellm_broker.api")

RELAYED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
#: The routes of the other APIs, and whose error shape each one answers in.
SURFACE_PATHS: dict[str, Surface] = {
    "/v1/responses": RESPONSES,
    "/v1/messages": ANTHROPIC,
    "/v1/messages/count_tokens": ANTHROPIC,
}

RouteHandler = Callable[[web.Request, Exchange], Awaitable[web.StreamResponse]]
#: The ids the connector relays too (it refuses anything else on these paths).
_BY_ID = "/v1/responses/{response_id:[A-Za-z0-9_-]{1,128}}"


def add_api_routes(app: web.Application) -> None:
    for path in RELAYED_PATHS:
        app.router.add_post(path, _api_route(_relayed))
    for path, surface in SURFACE_PATHS.items():
        app.router.add_post(path, _api_route(_relayed, surface))
    app[STORED] = StoredResponses()
    by_id = _api_route(_stored_response, RESPONSES)
    app.router.add_get(_BY_ID, by_id)
    app.router.add_delete(_BY_ID, by_id)
    app.router.add_post(_BY_ID + "/cancel", by_id)
    app.router.add_get(_BY_ID + "/input_items", by_id)
    app.router.add_get("/v1/models", _api_route(_list_models))
    app.router.add_get("/v1/models/{model_id:.+}", _api_route(_get_model))
    app.router.add_get("/openapi.json", _openapi)


def _api_route(
    handler: RouteHandler, surface: Surface = OPENAI
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def route(request: web.Request) -> web.StreamResponse:
        state = request.app[BROKER]
        ex = Exchange(request_id_for(request.headers), request.method, request.path)
        try:
            resp = await handler(request, ex)
            if not ex.status:
                ex.status = resp.status
        except OpenAIError as err:
            ex.status = err.status
            resp = surface.response(err)
        except web.HTTPException as exc:  # 413 from reading the body, ...
            ex.status = exc.status
            resp = surface.response(from_http_exception(exc, request.method, request.path))
        except asyncio.CancelledError:
            ex.status = ex.status or 499
            raise
        except Exception:  # a bug: the middleware answers 500 and logs the traceback
            ex.status = 500
            raise
        finally:
            _finish(state, ex)
        if not resp.prepared:
            for name, value in ex.headers.items():
                resp.headers.setdefault(name, value)
            if resp.status in CLOSES:
                resp.headers.setdefault("X-Request-ID", ex.request_id)
                await answer_and_close(request, resp)
        return resp

    return route


def _finish(state: BrokerState, ex: Exchange) -> None:
    """The one log line and the one metrics call of a request."""
    state.metrics.request_done(
        model=ex.model or "-",
        status=ex.status,
        duration_s=ex.duration_s,
        ttft_s=ex.ttft_s,
        nbytes=ex.nbytes,
        usage=ex.usage,
        user_id=ex.user_id,
    )
    level = log.warning if ex.status >= 500 and ex.status != 503 else log.info
    level("request", **ex.log_fields())
    state.usage.record(ex)


# -- authentication and limits ----------------------------------------------------------------


def _authenticate(request: web.Request, state: BrokerState, ex: Exchange) -> KeyIdentity:
    key = api_key(request.headers)
    if key is None:
        raise OpenAIError(
            401,
            "You didn't provide an API key. Send it in an Authorization header using Bearer "
            "auth (Authorization: Bearer YOUR_KEY) or in an x-api-key or api-key header.",
        )
    identity = None
    if plausible(key, MAX_API_KEY_CHARS):
        identity = state.store.authenticate(key)
    if identity is None:
        raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")
    ex.user_id, ex.key_id, ex.secret = identity.user_id, identity.key_id, key
    if identity.blocked:
        raise OpenAIError(403, "Your access has been blocked.", code="user_blocked")
    return identity


def _check_rate(state: BrokerState, identity: KeyIdentity, ex: Exchange) -> None:
    settings = state.settings
    rpm = settings.rate_limit_rpm if identity.rate_limit_rpm is None else identity.rate_limit_rpm
    burst = (
        settings.rate_limit_burst
        if identity.rate_limit_burst is None
        else identity.rate_limit_burst
    )
    if rpm <= 0 or burst <= 0:
        return
    decision = state.limiter.check(identity.user_id, rpm=rpm, burst=burst, now=time.monotonic())
    headers = decision.headers()
    if decision.allowed:
        ex.headers.update(headers)
        return
    state.metrics.rate_limited_requests.inc()
    raise OpenAIError(
        429,
        f"Rate limit reached: {rpm} requests per minute (burst {burst}). "
        f"Try again in {decision.retry_after_header}s.",
        code="rate_limit_exceeded",
        headers=headers,
    )


# -- relayed requests -------------------------------------------------------------------------


async def _relayed(request: web.Request, ex: Exchange) -> web.StreamResponse:
    state = request.app[BROKER]
    settings = state.settings
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise OpenAIError(413, "The request body is too large.", code="request_too_large")
    identity = _authenticate(request, state, ex)
    _check_rate(state, identity, ex)
    state.usage.check_quota(
        identity.user_id, identity.quota_daily_tokens, identity.quota_monthly_tokens
    )
    if state.draining:
        raise OpenAIError(
            503,
            "The server is shutting down; try again.",
            code="server_shutting_down",
            headers=retry_after_header(1.0),
        )
    held = await read_body(
        request,
        state.body_budget,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
    )
    try:
        return await _relay_held(request, state, ex, identity, held)
    finally:
        held.release()


async def _relay_held(
    request: web.Request,
    state: BrokerState,
    ex: Exchange,
    identity: KeyIdentity,
    held: HeldBody,
) -> web.StreamResponse:
    parsed = parse_body(request.path, held.data)
    ex.stream = parsed.stream
    if not state.registry.known(parsed.model) and not state.starting():
        raise model_not_found(parsed.model)
    ex.model = parsed.model
    endpoint = endpoint_for(request.path)
    # A model not known yet (a newly started broker waits for its connectors) is decided
    # after the attach wait: 404, or served by a connector that offers the endpoint. So is a
    # model whose connectors are all gone for now, and one whose LLM server is down: a 503
    # with Retry-After, never a 400 "unsupported" that a client would not retry.
    serving = state.registry.serving(parsed.model) if endpoint is not None else ()
    if (
        endpoint is not None
        and serving
        and not any(c.announces(parsed.model, endpoint) for c in serving)
    ):
        raise missing_endpoint(parsed.model, endpoint)
    only = None
    if parsed.previous_response_id is not None:
        stored = stored_for(request, identity, parsed.previous_response_id, "previous_response_id")
        only = stored.connector if stored is not None else None
    remember = remembering(request, identity, ex) if request.path == "/v1/responses" else None
    return await _relay_in_slot(
        request,
        ex,
        identity,
        held,
        surface=surface_for(request.path),
        endpoint=endpoint,
        only=only,
        on_first_chunk=remember,
    )


async def _relay_in_slot(
    request: web.Request,
    ex: Exchange,
    identity: KeyIdentity,
    body: HeldBody,
    **relay: Any,
) -> web.StreamResponse:
    """Take one of the key's concurrent-request slots (429 if none) and relay."""
    state = request.app[BROKER]
    settings = state.settings
    limit = settings.max_streams_per_key if identity.max_streams is None else identity.max_streams
    # Every live stream is counted, whatever the limit (0 = unlimited) was when it started, so
    # a limit lowered while streams run holds new ones back until fewer are running.
    if not state.slots.try_acquire(identity.user_id, limit):
        state.metrics.rate_limited_streams.inc()
        raise OpenAIError(
            429,
            f"Too many concurrent requests: at most {limit} at a time per user.",
            code="too_many_concurrent_requests",
            headers=retry_after_header(1.0),
        )
    principal = Principal(user_id=identity.user_id, key_id=identity.key_id, name=identity.name)
    state.track(ex)
    try:
        return await relay_request(request, state, ex, principal, body, **relay)
    finally:
        state.untrack(ex)
        state.slots.release(identity.user_id)


# -- stored responses (Responses API) ---------------------------------------------------------


async def _stored_response(request: web.Request, ex: Exchange) -> web.StreamResponse:
    """``GET``/``DELETE /v1/responses/{id}``, ``POST …/cancel``, ``GET …/input_items``: to
    the connector whose server made the response, for the user who made it."""
    state = request.app[BROKER]
    identity = _authenticate(request, state, ex)
    _check_rate(state, identity, ex)
    response_id = request.match_info["response_id"]
    if request.query_string:
        raise OpenAIError(
            400,
            "Query parameters are not relayed for stored responses; send the request without them.",
            code="invalid_request",
        )
    entry = stored_for(request, identity, response_id, None)
    if entry is None:
        raise OpenAIError(
            404,
            f"Response with id '{response_id}' not found. Only responses made through this "
            "broker (since it started) can be fetched by id, from a model server that stores "
            "them; send the whole conversation with store: false instead.",
            code="response_not_found",
        )
    if not any(c.name == entry.connector for c in state.registry.serving(entry.model)):
        raise OpenAIError(
            503,
            "The model server holding this response is not connected now; try again later.",
            code="no_capacity",
            headers=retry_after_header(5.0),
        )
    ex.model = entry.model
    relay = {"surface": RESPONSES, "endpoint": "/v1/responses", "only": entry.connector}
    empty = HeldBody(b"", state.body_budget, 0)
    resp = await _relay_in_slot(request, ex, identity, empty, **relay)
    if request.method == "DELETE" and ex.status == 200:
        request.app[STORED].forget(response_id)
    return resp


# -- model listing ----------------------------------------------------------------------------


async def _list_models(request: web.Request, ex: Exchange) -> web.StreamResponse:
    state = request.app[BROKER]
    _authenticate(request, state, ex)
    return web.Response(body=state.listing.body(), content_type="application/json")


async def _get_model(request: web.Request, ex: Exchange) -> web.StreamResponse:
    state = request.app[BROKER]
    _authenticate(request, state, ex)
    model_id = request.match_info["model_id"]
    info = state.registry.model(model_id)
    if info is None:
        raise model_not_found(model_id)
    ex.model = model_id
    return web.Response(body=state.listing.encode(info), content_type="application/json")


# -- OpenAPI ----------------------------------------------------------------------------------

_OPENAPI = resources.files("remotellm_broker").joinpath("openapi.json").read_bytes()


async def _openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_OPENAPI, content_type="application/json")
