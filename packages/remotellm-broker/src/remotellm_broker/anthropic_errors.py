"""Errors the way Anthropic's Messages API reports them, on ``/v1/messages`` and its siblings.

Anthropic's clients (the ``anthropic`` SDKs, Claude Code) read failures as
``{"type": "error", "error": {"type": "authentication_error", "message": "..."}}`` with the
matching HTTP status, and, inside a stream that already started, as an SSE ``event: error``
carrying the same object. The broker raises ``OpenAIError`` everywhere (one error type for the
whole request path); this module only changes how it is written out on these routes.

Status → type follows Anthropic's table: 400 ``invalid_request_error``, 401
``authentication_error``, 403 ``permission_error``, 404 ``not_found_error``, 413
``request_too_large``, 429 ``rate_limit_error``, 503/529 ``overloaded_error``, other 5xx
``api_error``. Statuses pass unchanged, so the SDKs' retry rules (429, 5xx) still apply, and
``Retry-After`` goes with them.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from remotellm_broker.openai_errors import OpenAIError

__all__ = ["ANTHROPIC_TYPES", "anthropic_payload", "anthropic_response", "anthropic_sse_event"]

_encoder = msgspec.json.Encoder()

ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _type(status: int) -> str:
    if status in ANTHROPIC_TYPES:
        return ANTHROPIC_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_payload(err: OpenAIError) -> dict[str, object]:
    """``err`` as Anthropic's error object."""
    return {"type": "error", "error": {"type": _type(err.status), "message": err.message}}


def anthropic_response(err: OpenAIError) -> web.Response:
    """The JSON error response (before anything else was sent)."""
    return web.Response(
        status=err.status,
        body=_encoder.encode(anthropic_payload(err)),
        content_type="application/json",
        headers=err.headers,
    )


def anthropic_sse_event(err: OpenAIError) -> bytes:
    """The ``event: error`` that ends a Messages stream which already started: never a
    ``message_stop``, so a truncated message never passes for complete."""
    return b"event: error\ndata: " + _encoder.encode(anthropic_payload(err)) + b"\n\n"
