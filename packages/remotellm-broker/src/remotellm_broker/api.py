"""The OpenAI-compatible routes: completions, chat, embeddings, model listing, OpenAPI.

Every route runs inside ``_openai_route``, which gives the request its ``Exchange`` (request
id, the record for the log line and metrics), turns any ``OpenAIError`` into OpenAI's JSON
error shape, and writes exactly one log line when the request ends, however it ends.

The order of checks for a relayed request is cheapest-first and never reads a body the
client may not send: size (413) → key (401/403) → rate limit (429) → body (400) → model
(404) → concurrent streams (429) → relay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import resources

import msgspec
from aiohttp import web

from remotellm_broker.bodies import parse_body
from remotellm_broker.exchange import Exchange, request_id_for
from remotellm_broker.forward import relay_request
from remotellm_broker.logs import get_logger
from remotellm_broker.openai_errors import OpenAIError, from_http_exception, retry_after_header
from remotellm_broker.state import BROKER, BrokerState
from remotellm_broker.users import KeyIdentity
from remotellm_protocol import ModelInfo, Principal

__all__ = ["RELAYED_PATHS", "add_api_routes"]

log = get_logger("remotellm_broker.api")

RELAYED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
_MAX_KEY_LENGTH = 256
_encoder = msgspec.json.Encoder()

RouteHandler = Callable[[web.Request, Exchange], Awaitable[web.StreamResponse]]


def add_api_routes(app: web.Application) -> None:
    for path in RELAYED_PATHS:
        app.router.add_post(path, _openai_route(_relayed))
    app.router.add_get("/v1/models", _openai_route(_list_models))
    app.router.add_get("/v1/models/{model_id:.+}", _openai_route(_get_model))
    app.router.add_get("/openapi.json", _openapi)


def _openai_route(handler: RouteHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def route(request: web.Request) -> web.StreamResponse:
        state = request.app[BROKER]
        ex = Exchange(request_id_for(request.headers), request.method, request.path)
        try:
            resp = await handler(request, ex)
            if not ex.status:
                ex.status = resp.status
        except OpenAIError as err:
            ex.status = err.status
            resp = err.response()
        except web.HTTPException as exc:  # 413 from reading the body, ...
            ex.status = exc.status
            resp = from_http_exception(exc, request.method, request.path).response()
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
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, key = auth.partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
    else:
        key = request.headers.get("api-key", "").strip()
    if auth is None and not key:
        raise OpenAIError(
            401,
            "You didn't provide an API key. Send it in an Authorization header using Bearer "
            "auth (Authorization: Bearer YOUR_KEY) or in an api-key header.",
        )
    identity = None
    if key and len(key) <= _MAX_KEY_LENGTH and key.isascii() and key.isprintable():
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
    decision = state.limiter.check(identity.key_id, rpm=rpm, burst=burst, now=time.monotonic())
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
    try:
        body = await request.read()
    except web.RequestPayloadError:
        raise OpenAIError(
            400,
            "The request body could not be read (bad encoding or framing).",
            code="invalid_request",
        ) from None
    parsed = parse_body(request.path, body)
    ex.stream = parsed.stream
    if not state.registry.serving(parsed.model):
        raise _model_not_found(parsed.model)
    ex.model = parsed.model
    limit = settings.max_streams_per_key if identity.max_streams is None else identity.max_streams
    if limit > 0 and not state.slots.try_acquire(identity.key_id, limit):
        state.metrics.rate_limited_streams.inc()
        raise OpenAIError(
            429,
            f"Too many concurrent requests: at most {limit} at a time for this key.",
            code="too_many_concurrent_requests",
            headers=retry_after_header(1.0),
        )
    principal = Principal(user_id=identity.user_id, key_id=identity.key_id, name=identity.name)
    state.track(ex)
    try:
        return await relay_request(request, state, ex, principal, body)
    finally:
        state.untrack(ex)
        if limit > 0:
            state.slots.release(identity.key_id)


def _model_not_found(model: str) -> OpenAIError:
    shown = model if len(model) <= 100 else model[:100] + "…"
    return OpenAIError(
        404,
        f"The model '{shown}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


# -- model listing ----------------------------------------------------------------------------


def _model_object(info: ModelInfo, created: int) -> dict[str, object]:
    obj: dict[str, object] = {
        "id": info.id,
        "object": "model",
        "created": created,
        "owned_by": info.owned_by or "remotellm",
    }
    if info.context_length:
        obj["context_length"] = info.context_length
        obj["max_model_len"] = info.context_length
    return obj


async def _list_models(request: web.Request, ex: Exchange) -> web.StreamResponse:
    state = request.app[BROKER]
    _authenticate(request, state, ex)
    data = [_model_object(m, state.started_at) for m in state.registry.models()]
    return web.Response(
        body=_encoder.encode({"object": "list", "data": data}), content_type="application/json"
    )


async def _get_model(request: web.Request, ex: Exchange) -> web.StreamResponse:
    state = request.app[BROKER]
    _authenticate(request, state, ex)
    model_id = request.match_info["model_id"]
    info = state.registry.model(model_id)
    if info is None:
        raise _model_not_found(model_id)
    ex.model = model_id
    return web.Response(
        body=_encoder.encode(_model_object(info, state.started_at)), content_type="application/json"
    )


# -- OpenAPI ----------------------------------------------------------------------------------

_OPENAPI = resources.files("remotellm_broker").joinpath("openapi.json").read_bytes()


async def _openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_OPENAPI, content_type="application/json")
