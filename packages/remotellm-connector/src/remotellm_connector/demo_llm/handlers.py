"""The request handlers: generation (streaming and not), embeddings, models, stats.

A client that goes away mid-stream is noticed in two ways: the server runner cancels the
handler (``handler_cancellation=True``, which ``serve_demo_llm`` and aiohttp's TestServer set),
or the next write raises ``ConnectionResetError``. Either way it lands in
``DemoStats.disconnects``, which is how tests prove a relay's cancel reached the upstream.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web

from remotellm_connector.demo_llm.bodies import StreamShape, full_body, scripted_calls_shape
from remotellm_connector.demo_llm.config import DEMO_CONFIG, DEMO_STATS, DemoStats, Disconnect
from remotellm_connector.demo_llm.content import (
    embedding_vector,
    encode_embedding,
    prompt_bytes,
    prompt_token_count,
)
from remotellm_connector.demo_llm.errors import ApiError
from remotellm_connector.demo_llm.frames import FrameShape
from remotellm_connector.demo_llm.messages_api import message_body, message_shape
from remotellm_connector.demo_llm.request import Kind, Plan, check_model, plan_generation, read_body
from remotellm_connector.demo_llm.responses_api import response_body, response_shape

__all__ = [
    "chat_completions",
    "completions",
    "count_tokens",
    "embeddings",
    "messages",
    "responses",
    "stats",
    "stats_reset",
]

_POLL_S = 0.1
_encode = msgspec.json.Encoder().encode
_BIG_BODY_BYTES = 1024 * 1024


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completion")


async def responses(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "responses")


async def messages(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "messages")


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """Anthropic's token count: the same count as a message's usage.input_tokens."""
    body = read_body(await request.read())
    check_model(body, request.app[DEMO_CONFIG])
    if not isinstance(body.get("messages"), list):
        raise ApiError(400, "messages: Field required", param="messages")
    reply = {"input_tokens": prompt_token_count(prompt_bytes(body))}
    return await _send_json(request, _encode(reply))


_PREFIX = {"chat": "chatcmpl-", "completion": "cmpl-", "responses": "resp_", "messages": "msg_"}


async def _generate(request: web.Request, kind: Kind) -> web.StreamResponse:
    body = read_body(await request.read())
    plan = plan_generation(body, kind, request.app[DEMO_CONFIG])
    response_id = _PREFIX[kind] + uuid.uuid4().hex[:24]
    created = int(time.time())
    if plan.stream:
        shape: StreamShape | FrameShape
        if kind == "responses":
            shape = response_shape(plan, response_id, body, created)
        elif kind == "messages":
            shape = message_shape(plan, response_id)
        elif plan.calls:
            shape = scripted_calls_shape(plan, response_id, created)
        else:
            shape = StreamShape(plan, response_id, created)
        return await _stream(request, plan, shape)
    try:
        await _sleep(request, plan.ttft_s + plan.gap_s * max(plan.tokens - 1, 0))
    except ConnectionResetError:
        _record_disconnect(request.app[DEMO_STATS], request, plan, 0)
        return web.Response()  # nobody is left to read it
    except asyncio.CancelledError:
        if _client_gone(request):
            _record_disconnect(request.app[DEMO_STATS], request, plan, 0)
        raise
    if plan.fail_after is not None:
        _drop_connection(request)
        return web.Response()  # never sent: aiohttp swallows the write to a closed transport
    if kind == "responses":
        return await _send_json(request, response_body(plan, response_id, body, created))
    if kind == "messages":
        return await _send_json(request, message_body(plan, response_id))
    return await _send_json(request, full_body(plan, response_id, created))


async def _send_json(request: web.Request, body: bytes) -> web.StreamResponse:
    """Small bodies as one Response; big ones written once with a length, which aiohttp
    accepts without its "large body" ResourceWarning (tests turn warnings into errors)."""
    if len(body) < _BIG_BODY_BYTES:
        return web.Response(body=body, headers=_json_headers(request))
    response = web.StreamResponse(headers=_json_headers(request))
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body)
    await response.write_eof()
    return response


def _drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


async def _stream(
    request: web.Request, plan: Plan, shape: StreamShape | FrameShape
) -> web.StreamResponse:
    stats = request.app[DEMO_STATS]
    response = web.StreamResponse(headers=_sse_headers(request))
    await response.prepare(request)
    stats.stream_opened()
    sent = 0
    try:
        await _sleep(request, plan.ttft_s)
        count = shape.count
        last = count - 1
        fail_after = plan.fail_after
        stall_after = plan.stall_after
        gap = plan.gap_s
        for k, chunk in enumerate(shape.chunks()):
            if k == fail_after:
                break
            if k == stall_after:
                await _stall(request)
            await response.write(shape.opening + chunk if k == 0 else chunk)
            sent += 1
            # Yield even without a gap, as a real server does per token: otherwise one stream
            # would run to its end before any other stream got a turn.
            await asyncio.sleep(gap if gap > 0 and k < last else 0)
        # A fault asked for after the last token cuts the stream before its final chunk.
        if fail_after is not None:
            stats.stream_failed()
            _drop_connection(request)
            return response
        if stall_after is not None and stall_after >= count:
            await _stall(request)
        await response.write(shape.closing if count else shape.opening + shape.closing)
        await response.write_eof()
        stats.stream_completed()
    except ConnectionResetError:
        _record_disconnect(stats, request, plan, sent)
    except asyncio.CancelledError:
        if _client_gone(request):
            _record_disconnect(stats, request, plan, sent)
        raise
    finally:
        stats.stream_closed()
    return response


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _sleep(request: web.Request, seconds: float) -> None:
    """Sleep, but notice a client that leaves during a long wait (a slow prefill).

    Under ``handler_cancellation`` the handler is cancelled anyway; a bare ``AppRunner`` would
    otherwise learn of the disconnect only at the next write, maybe 30 s later.
    """
    if seconds <= _POLL_S:
        if seconds > 0:
            await asyncio.sleep(seconds)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        if _client_gone(request):
            raise ConnectionResetError("client left while the model was thinking")
        await asyncio.sleep(min(left, _POLL_S))


async def _stall(request: web.Request) -> None:
    """Send nothing until the client leaves; then behave as a failed write would."""
    while True:
        await _sleep(request, 3600.0)  # raises ConnectionResetError once the client is gone


def _record_disconnect(stats: DemoStats, request: web.Request, plan: Plan, sent: int) -> None:
    stats.disconnected(
        Disconnect(
            at=time.monotonic(),
            request_id=request.headers.get("X-Request-ID"),
            seed=plan.seed,
            path=request.path,
            tokens_sent=sent,
        )
    )


async def embeddings(request: web.Request) -> web.StreamResponse:
    body = read_body(await request.read())
    config = request.app[DEMO_CONFIG]
    model = check_model(body, config)
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise ApiError(400, "'input' must be a string or a non-empty array.", param="input")
    dim = body.get("dimensions", config.embedding_dim)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ApiError(400, "'dimensions' must be a positive integer.", param="dimensions")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be float or base64.", param="encoding_format")
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": encode_embedding(embedding_vector(x, dim), fmt),
        }
        for i, x in enumerate(items)
    ]
    used = prompt_token_count(prompt_bytes(body))
    usage = {"prompt_tokens": used, "total_tokens": used}
    reply = {"object": "list", "data": data, "model": model, "usage": usage}
    return await _send_json(request, _encode(reply))


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[DEMO_STATS].snapshot())


async def stats_reset(request: web.Request) -> web.Response:
    request.app[DEMO_STATS].reset()
    return web.json_response(request.app[DEMO_STATS].snapshot())


def _sse_headers(request: web.Request) -> dict[str, str]:
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    return _with_request_id(request, headers)


def _json_headers(request: web.Request) -> dict[str, str]:
    return _with_request_id(request, {"Content-Type": "application/json"})


def _with_request_id(request: web.Request, headers: dict[str, str]) -> dict[str, str]:
    request_id = request.headers.get("X-Request-ID")
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return headers
