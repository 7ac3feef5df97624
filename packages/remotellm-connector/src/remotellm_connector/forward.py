"""What the connector may ask the local LLM, and how a relayed request is rewritten: pure.

Only the API routes an API user needs are forwarded (``ROUTES``: OpenAI's, the Responses API,
Anthropic's Messages API; plus ``/v1/responses/{id}`` and its ``cancel``/``input_items`` with
an id of ``[A-Za-z0-9_-]``); anything else — Ollama's ``/api/pull`` or ``/api/delete``, an
absolute URL, ``..``, a query string — is refused with ``BAD_REQUEST`` before a byte reaches
the LLM. The comparison is exact on the raw path, so no decoding trick can widen it.

Usage accounting: a streaming chat or completion request that did not ask for
``stream_options.include_usage`` gets it added, so ``end`` can carry token counts; the plan
then says the extra usage chunk must be stripped from what the client sees. The body is never
re-encoded: only three fields are decoded (the rest is skipped unparsed), and the option is
spliced into the client's bytes (``splice``), in one copy. A body with no ``stream_options``
gets it after the opening brace; one with ``stream_options`` is scanned for its span, which
is linear Python work, so ``plan_in_thread`` says when to plan off the event loop.
"""

import re
from enum import Enum, auto
from typing import Final

import msgspec

from remotellm_connector.errors import RequestRefused
from remotellm_connector.splice import with_include_usage
from remotellm_protocol import Open

__all__ = [
    "HOP_BY_HOP",
    "ROUTES",
    "RequestRefused",
    "UpstreamRequest",
    "UsageMode",
    "plan_in_thread",
    "plan_request",
]

ROUTES: Final = frozenset(
    {
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("POST", "/v1/responses"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
    }
)
#: A stored response of the Responses API, by id (answered by the server that stored it).
_RESPONSE_ID_ROUTES: Final = {
    "GET": re.compile(r"/v1/responses/[A-Za-z0-9_-]{1,200}(?:/input_items)?"),
    "DELETE": re.compile(r"/v1/responses/[A-Za-z0-9_-]{1,200}"),
    "POST": re.compile(r"/v1/responses/[A-Za-z0-9_-]{1,200}/cancel"),
}
_STREAMING_ROUTES: Final = frozenset({"/v1/chat/completions", "/v1/completions"})

#: The hop-by-hop headers (RFC 9110 7.6.1, and the older ones of RFC 2616 13.5.1): never
#: relayed in either direction. The one list of them in the connector.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Request headers never sent to the LLM: hop-by-hop, framing the client library
#: recomputes, and credentials (the LLM key, if any, is the connector's own).
DROP_REQUEST_HEADERS: Final = HOP_BY_HOP | frozenset(
    {
        "proxy-authorization",
        "host",
        "content-length",
        "accept-encoding",
        "authorization",
        "api-key",
        "cookie",
        "x-api-key",
    }
)

_INJECTED: Final = b'"stream_options":{"include_usage":true},'


class UsageMode(Enum):
    """How the response body is read for token usage."""

    NONE = auto()  # nothing to read (GET /v1/models)
    SNIFF = auto()  # forward as is; read the usage from the tail
    STRIP = auto()  # the connector asked for usage: remove the usage-only SSE chunk


class _PeekOptions(msgspec.Struct):
    include_usage: bool | None = None


class _Peek(msgspec.Struct):
    """The few body fields the connector looks at; everything else is skipped unparsed."""

    model: str | None = None
    stream: bool = False
    #: UNSET when absent: then the option can go in after the ``{`` without a scan.
    stream_options: _PeekOptions | msgspec.UnsetType | None = msgspec.UNSET


_peek = msgspec.json.Decoder(_Peek)


class UpstreamRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A validated request, ready for the LLM."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    model: str | None = None
    stream: bool = False
    usage: UsageMode = UsageMode.NONE
    #: The client's own body when ``body`` has ``stream_options`` added (the fallback).
    original_body: bytes | None = None

    def without_injection(self) -> "UpstreamRequest":
        """The same request as the client sent it, for LLM servers that reject the option."""
        assert self.original_body is not None
        return msgspec.structs.replace(
            self, body=self.original_body, usage=UsageMode.SNIFF, original_body=None
        )


#: Bodies above this size are planned in a worker thread (see ``splice``).
_INLINE_PLAN_BYTES: Final = 1024 * 1024


def plan_in_thread(body: bytes) -> bool:
    """Whether planning ``body`` may take long enough to hold the event loop."""
    return len(body) > _INLINE_PLAN_BYTES


def plan_request(frame: Open, body: bytes, *, inject_usage: bool = True) -> UpstreamRequest:
    """Check ``frame`` against the allow-list and build the upstream request.

    Raises ``RequestRefused`` with a message safe to show the client.
    """
    method = frame.method.upper()
    by_id = _RESPONSE_ID_ROUTES.get(method)
    if (method, frame.path) not in ROUTES and not (by_id and by_id.fullmatch(frame.path)):
        raise RequestRefused(f"{frame.method} {frame.path[:200]} is not relayed by this connector")
    headers = [(k, v) for k, v in frame.headers if k.lower() not in DROP_REQUEST_HEADERS]
    if method in ("GET", "DELETE") or (method == "POST" and frame.path.endswith("/cancel")):
        return UpstreamRequest(method=method, path=frame.path, headers=headers, body=b"")
    try:
        peek = _peek.decode(body)
    except msgspec.DecodeError:
        # Not a JSON object of the expected shape: the LLM answers it with its own 400.
        return UpstreamRequest(
            method=method, path=frame.path, headers=headers, body=body, usage=UsageMode.SNIFF
        )
    plan = UpstreamRequest(
        method=method,
        path=frame.path,
        headers=headers,
        body=body,
        model=peek.model,
        stream=peek.stream,
        usage=UsageMode.SNIFF,
    )
    if not (peek.stream and inject_usage and frame.path in _STREAMING_ROUTES):
        return plan
    options = peek.stream_options
    if isinstance(options, _PeekOptions) and options.include_usage is True:
        return plan  # the client asked: its usage chunk stays
    if options is msgspec.UNSET:
        start = body.index(b"{") + 1  # decoding succeeded, so the body is an object
        view = memoryview(body)
        new_body = b"".join((view[:start], _INJECTED, view[start:]))
    else:
        try:
            new_body = with_include_usage(body)
        except (ValueError, IndexError):  # cannot happen for a body msgspec decoded
            return plan
    return msgspec.structs.replace(plan, body=new_body, usage=UsageMode.STRIP, original_body=body)
