"""CORS for the API routes, so a web page on an origin the operator lists can call the broker.

Off by default (``cors_allow_origins`` empty): no page elsewhere may read an answer. For a
listed origin (exact ``scheme://host[:port]``, or ``*`` for any):

* a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) on an API path is answered
  204 with the allowed methods (GET, POST, DELETE) and the requested headers that are allowed:
  ``Authorization``, ``x-api-key``, ``api-key``, ``anthropic-version``, ``anthropic-beta``,
  ``Content-Type``, ``x-request-id``, ``OpenAI-Beta``, the SDKs' ``x-stainless-*`` and
  ``anthropic-dangerous-direct-browser-access`` (sent by the Anthropic SDKs in browsers);
* every response to it, streams included (the headers are set in ``on_response_prepare``,
  just before the status line goes out), carries ``Access-Control-Allow-Origin`` and exposes
  ``x-request-id``, ``retry-after`` and the ``x-ratelimit-*`` headers to the page.

An origin not listed gets no grant: its preflight is refused with 403 and its responses carry
no ``Access-Control-*`` header, so the browser withholds them. No credentials mode: the API is
authenticated by header, never by cookie, so ``Access-Control-Allow-Credentials`` is never
sent. ``/v1/relay`` (connectors) and the portal are not API routes here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from aiohttp import web

__all__ = ["ALLOWED_REQUEST_HEADERS", "EXPOSED_HEADERS", "add_cors"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOWED_REQUEST_HEADERS: Final = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "anthropic-version",
        "anthropic-beta",
        "anthropic-dangerous-direct-browser-access",
        "content-type",
        "x-request-id",
        "openai-beta",
    }
)
_ALLOWED_PREFIX: Final = "x-stainless-"
EXPOSED_HEADERS: Final = (
    "x-request-id",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
_METHODS: Final = "GET, POST, DELETE, OPTIONS"
_MAX_AGE_S: Final = "600"


def is_api_path(path: str) -> bool:
    return (path.startswith("/v1/") and path != "/v1/relay") or path == "/openapi.json"


class _Policy:
    def __init__(self, origins: Iterable[str]) -> None:
        listed = {o.rstrip("/") for o in origins}
        self.any = "*" in listed
        self.origins = frozenset(listed - {"*"})

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any or origin in self.origins)


def add_cors(app: web.Application, origins: Iterable[str]) -> None:
    """Answer preflights and grant the listed ``origins`` on the API routes (no-op if none)."""
    policy = _Policy(origins)
    if not policy.any and not policy.origins:
        return

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method != "OPTIONS"
            or "Access-Control-Request-Method" not in request.headers
            or not is_api_path(request.path)
        ):
            return await handler(request)
        if not policy.allows(request.headers.get("Origin")):
            return web.Response(status=403, text="CORS: origin not allowed\n")
        asked = request.headers.get("Access-Control-Request-Headers", "")
        granted = [
            h
            for h in (name.strip().lower() for name in asked.split(","))
            if h in ALLOWED_REQUEST_HEADERS or h.startswith(_ALLOWED_PREFIX)
        ]
        headers = {
            "Access-Control-Allow-Methods": _METHODS,
            "Access-Control-Max-Age": _MAX_AGE_S,
        }
        if granted:
            headers["Access-Control-Allow-Headers"] = ", ".join(granted)
        return web.Response(status=204, headers=headers)

    async def grant(request: web.Request, response: web.StreamResponse) -> None:
        if not is_api_path(request.path):
            return
        response.headers.add("Vary", "Origin")
        origin = request.headers.get("Origin")
        if not policy.allows(origin):
            return
        assert origin is not None
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)

    app.middlewares.insert(0, preflight)
    app.on_response_prepare.append(grant)
