"""Errors the way OpenAI's API reports them, so every client library understands ours.

One shape for every failure: ``{"error": {"message", "type", "param", "code"}}`` with the
matching HTTP status. Before a response has started it is a JSON body; once a stream has
started (the status line is gone) it is an SSE ``error`` event, and the stream then closes
without ``data: [DONE]``, so a truncated answer never looks complete.

``OpenAIError`` is raised anywhere in the request path and turned into a response at the
edge; ``from_stream_error`` maps a connector's wire ``ErrorCode`` to its status once, here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec
from aiohttp import web

from remotellm_protocol import CancelReason, ErrorCode, StreamError

__all__ = [
    "ERROR_STATUS",
    "RETRYABLE",
    "OpenAIError",
    "from_cancel",
    "from_http_exception",
    "from_stream_error",
    "model_not_found",
    "retry_after_header",
]

_encoder = msgspec.json.Encoder()

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIError(Exception):
    """A request failed; carries everything needed to tell the client so."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type_: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or _TYPES.get(status, "server_error" if status >= 500 else "api_error")
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return _encoder.encode(self.payload())

    def response(self) -> web.Response:
        """The JSON error response (before anything else was sent)."""
        return web.Response(
            status=self.status,
            body=self.body(),
            content_type="application/json",
            headers=self.headers,
        )

    def sse_event(self) -> bytes:
        """The SSE event that reports this error inside an already started stream."""
        return b"event: error\ndata: " + self.body() + b"\n\n"


#: Longest ``Retry-After`` the broker sends: a connector's hint above it (or infinite, or
#: NaN) must not tell clients to wait for ever, nor break the response.
MAX_RETRY_AFTER_S = 3600


def retry_after_header(seconds: float | None, default: float = 1.0) -> dict[str, str]:
    """``Retry-After`` in whole seconds (1 to ``MAX_RETRY_AFTER_S``), as HTTP wants it."""
    value = default if seconds is None or math.isnan(seconds) or seconds <= 0 else seconds
    return {"Retry-After": str(max(1, math.ceil(min(value, MAX_RETRY_AFTER_S))))}


#: HTTP status of each wire error code (contracts: "ErrorCode → HTTP status at the broker").
ERROR_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNKNOWN: 502,
    ErrorCode.UPSTREAM_UNREACHABLE: 502,
    ErrorCode.UPSTREAM_TIMEOUT: 504,
    ErrorCode.UPSTREAM_STATUS: 502,
    ErrorCode.UPSTREAM_INTERRUPTED: 502,
    ErrorCode.CANCELLED: 499,
    ErrorCode.POLICY_DENIED: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INTERNAL: 502,
    ErrorCode.GOING_AWAY: 503,
}

#: Codes that mean "this connector did not start the request; another one may".
RETRYABLE = frozenset({ErrorCode.OVERLOADED, ErrorCode.GOING_AWAY})

_CODES: dict[ErrorCode, str] = {
    ErrorCode.UPSTREAM_UNREACHABLE: "upstream_unreachable",
    ErrorCode.UPSTREAM_TIMEOUT: "upstream_timeout",
    ErrorCode.UPSTREAM_STATUS: "upstream_error",
    ErrorCode.UPSTREAM_INTERRUPTED: "upstream_interrupted",
    ErrorCode.CANCELLED: "cancelled",
    ErrorCode.POLICY_DENIED: "policy_denied",
    ErrorCode.RATE_LIMITED: "rate_limit_exceeded",
    ErrorCode.OVERLOADED: "overloaded",
    ErrorCode.BAD_REQUEST: "bad_request",
    ErrorCode.INTERNAL: "connector_error",
    ErrorCode.GOING_AWAY: "overloaded",
    ErrorCode.UNKNOWN: "upstream_error",
}

_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.UPSTREAM_UNREACHABLE: "The model server could not be reached.",
    ErrorCode.UPSTREAM_TIMEOUT: "The model server did not answer in time.",
    ErrorCode.UPSTREAM_STATUS: "The model server answered with an error.",
    ErrorCode.UPSTREAM_INTERRUPTED: "The model server's response broke off.",
    ErrorCode.CANCELLED: "The request was cancelled.",
    ErrorCode.POLICY_DENIED: "The owner of this model does not allow you to use it.",
    ErrorCode.RATE_LIMITED: "Rate limit reached for this model; try again later.",
    ErrorCode.OVERLOADED: "The model is busy; try again later.",
    ErrorCode.BAD_REQUEST: "The request cannot be relayed to the model server.",
    ErrorCode.INTERNAL: "The model's connector failed to handle the request.",
    ErrorCode.GOING_AWAY: "The model's connector is restarting; try again later.",
    ErrorCode.UNKNOWN: "The model's connector reported an unknown error.",
}


def model_not_found(model: str) -> OpenAIError:
    """404 for a model no connector serves or served within the model memory."""
    shown = model if len(model) <= 100 else model[:100] + "…"
    return OpenAIError(
        404,
        f"The model '{shown}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def from_stream_error(error: StreamError) -> OpenAIError:
    """The client-facing error for a connector's ``End(error=...)``."""
    code = ErrorCode.parse(error.code)
    status = ERROR_STATUS[code]
    headers = retry_after_header(error.retry_after) if status in (429, 503) else None
    if code is ErrorCode.UPSTREAM_UNREACHABLE:  # usually restarting: say when to come back
        headers = retry_after_header(error.retry_after, default=2.0)
    base = _MESSAGES[code]
    detail = error.message.strip()[:500]
    message = f"{base} ({detail})" if detail else base
    return OpenAIError(status, message, code=_CODES[code], headers=headers)


def from_cancel(reason: CancelReason) -> OpenAIError:
    """The error a stream ends with when the broker itself stops it."""
    if reason is CancelReason.USER_BLOCKED:
        return OpenAIError(403, "Your access has been blocked.", code="user_blocked")
    if reason is CancelReason.DEADLINE:
        return OpenAIError(504, "The request took too long.", code="request_timeout")
    if reason is CancelReason.SHUTDOWN:
        return OpenAIError(
            503,
            "The server is shutting down; try again.",
            code="server_shutting_down",
            headers=retry_after_header(1.0),
        )
    return OpenAIError(499, "The request was cancelled.", code="cancelled")


_HTTP_MESSAGES = {
    404: ("Unknown request URL: {method} {path}.", "unknown_url"),
    405: ("Method {method} is not allowed for {path}.", "method_not_allowed"),
    413: ("The request body is too large.", "request_too_large"),
}


def from_http_exception(exc: web.HTTPException, method: str, path: str) -> OpenAIError:
    """An aiohttp HTTP error (routing 404/405, body 413, ...) in OpenAI's shape."""
    template, code = _HTTP_MESSAGES.get(exc.status, ("{reason}.", None))
    shown_path = path if len(path) <= 200 else path[:200] + "…"
    message = template.format(method=method[:20], path=shown_path, reason=exc.reason)
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return OpenAIError(exc.status, message, code=code, headers=headers)
