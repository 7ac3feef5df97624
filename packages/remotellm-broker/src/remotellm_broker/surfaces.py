"""The three API surfaces the broker relays, and what differs between them.

* **OpenAI** (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``): every model
  server has them; errors in OpenAI's shape, a failed stream ends with ``event: error``.
* **Responses** (``/v1/responses`` and ``/v1/responses/{id}...``): OpenAI's error shape for
  whole responses; inside a stream, the Responses API's own ``error`` event
  (``{"type": "error", "code", "message", "param", "sequence_number"}``), which also carries
  the ``error`` object so the openai SDKs raise ``APIError`` instead of ending quietly.
* **Anthropic** (``/v1/messages``, ``/v1/messages/count_tokens``): Anthropic's error shape
  (``anthropic_errors``).

The Responses and Anthropic paths are *endpoints* a model server may or may not answer: a
connector announces them per model (``ModelInfo.endpoints``), and the broker routes such a
request only to a connector that did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec
from aiohttp import web

from remotellm_broker.anthropic_errors import anthropic_response, anthropic_sse_event
from remotellm_broker.openai_errors import OpenAIError

__all__ = [
    "ANTHROPIC",
    "BASELINE_ENDPOINTS",
    "KNOWN_ENDPOINTS",
    "OPENAI",
    "RESPONSES",
    "Surface",
    "endpoint_for",
    "missing_endpoint",
    "surface_for",
]

_encoder = msgspec.json.Encoder()

#: What a connector that announces no endpoints (an older one) is assumed to serve.
BASELINE_ENDPOINTS: Final = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
#: Every endpoint the broker knows; anything else a connector announces is ignored.
KNOWN_ENDPOINTS: Final = frozenset(
    {*BASELINE_ENDPOINTS, "/v1/responses", "/v1/messages", "/v1/messages/count_tokens"}
)


@dataclass(frozen=True, slots=True)
class Surface:
    """How one API writes an error: as a whole response, and as the event ending a stream."""

    name: str
    response: Callable[[OpenAIError], web.Response]
    sse_event: Callable[[OpenAIError], bytes]


def _responses_sse_event(err: OpenAIError) -> bytes:
    payload = {
        "type": "error",
        "code": err.code,
        "message": err.message,
        "param": err.param,
        # The broker does not read the upstream's numbering; 0 says "the broker's own event".
        "sequence_number": 0,
        **err.payload(),
    }
    return b"event: error\ndata: " + _encoder.encode(payload) + b"\n\n"


OPENAI: Final = Surface("openai", OpenAIError.response, OpenAIError.sse_event)
RESPONSES: Final = Surface("responses", OpenAIError.response, _responses_sse_event)
ANTHROPIC: Final = Surface("anthropic", anthropic_response, anthropic_sse_event)


def surface_for(path: str) -> Surface:
    """The surface whose error shape a request for ``path`` gets (unknown paths: OpenAI)."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ANTHROPIC
    if path == "/v1/responses" or path.startswith("/v1/responses/"):
        return RESPONSES
    return OPENAI


def endpoint_for(path: str) -> str | None:
    """The endpoint a connector must announce to be sent a request for ``path``; None for
    the OpenAI paths every model server has."""
    if path == "/v1/responses" or path.startswith("/v1/responses/"):
        return "/v1/responses"
    if path in ("/v1/messages", "/v1/messages/count_tokens"):
        return path
    return None


_API_NAMES = {
    "/v1/responses": "the OpenAI Responses API",
    "/v1/messages": "the Anthropic Messages API",
    "/v1/messages/count_tokens": "Anthropic token counting",
}


def missing_endpoint(model: str, endpoint: str) -> OpenAIError:
    """No connector of ``model`` announced ``endpoint``: say so, and what works instead."""
    shown = model if len(model) <= 100 else model[:100] + "…"
    return OpenAIError(
        400,
        f"The model '{shown}' cannot be used through {endpoint} here: its server does not "
        f"offer {_API_NAMES[endpoint]} (missing endpoint capability '{endpoint}'). "
        "Use POST /v1/chat/completions with this model instead.",
        code="unsupported_endpoint",
        param="model",
    )
