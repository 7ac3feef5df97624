"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with a status.

Handlers raise ``ApiError``; the app's middleware turns it into the response, so every refusal
(bad JSON, unknown model, missing key, an injected ``x_status``) looks like OpenAI's, or on the
Messages routes like Anthropic's: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from aiohttp import web

__all__ = ["ApiError", "anthropic_error_type", "error_body", "injected_error"]

_encode = msgspec.json.Encoder().encode
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """The ``error.type`` Anthropic gives a status."""
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(
    message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return _encode({"error": {"message": message, "type": type_, "param": param, "code": code}})


class ApiError(Exception):
    """A refusal with the HTTP status and OpenAI error fields to send."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self, *, anthropic: bool = False) -> web.Response:
        if anthropic:
            error = {"type": anthropic_error_type(self.status), "message": self.message}
            body = _encode({"type": "error", "error": error})
        else:
            body = error_body(self.message, type_=self.type, param=self.param, code=self.code)
        return web.Response(
            status=self.status,
            body=body,
            content_type="application/json",
            headers=self.headers,
        )


def injected_error(status: int, retry_after: int | None) -> ApiError:
    """The error a request asked for with ``x_status`` (typed the way OpenAI types it)."""
    code: str | None = None
    if status == 429:
        type_, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        type_ = "server_error"
    else:
        type_ = "invalid_request_error"
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return ApiError(
        status,
        f"demo LLM: HTTP {status} injected by x_status",
        type_=type_,
        code=code,
        headers=headers,
    )
