"""Scripted model-server answers for the Responses and Messages APIs (for ``ConnectorPeer``).

The events are what llama-server, vLLM and the hosted APIs send, trimmed to the fields the
SDKs read: ``RESPONSE_EVENTS`` a Responses stream, ``MESSAGE_EVENTS`` an Anthropic one.
"""

from __future__ import annotations

import asyncio
import json

from connector_peer import PeerStream, Script
from remotellm_protocol import ErrorCode, StreamError, Usage

ALL_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
)


def sse(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


_RESPONSE = {
    "id": "resp_abc123",
    "object": "response",
    "created_at": 1700000000,
    "model": "m",
    "status": "in_progress",
    "output": [],
    "usage": None,
}
_DONE = {
    **_RESPONSE,
    "status": "completed",
    "output": [
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hi there", "annotations": []}],
        }
    ],
    "usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
}

RESPONSE_EVENTS = [
    sse("response.created", {"type": "response.created", "sequence_number": 0,
                             "response": _RESPONSE}),
    sse("response.output_text.delta", {"type": "response.output_text.delta",
                                       "sequence_number": 1, "item_id": "msg_1",
                                       "output_index": 0, "content_index": 0,
                                       "delta": "Hi"}),
    sse("response.output_text.delta", {"type": "response.output_text.delta",
                                       "sequence_number": 2, "item_id": "msg_1",
                                       "output_index": 0, "content_index": 0,
                                       "delta": " there"}),
    sse("response.completed", {"type": "response.completed", "sequence_number": 3,
                               "response": _DONE}),
]  # fmt: skip
RESPONSE_JSON = json.dumps({**_DONE}).encode()

MESSAGE_EVENTS = [
    sse("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "m",
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 1}}}),
    sse("content_block_start", {"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}}),
    sse("ping", {"type": "ping"}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": "Hi"}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": " there"}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    sse("message_delta", {"type": "message_delta",
                          "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                          "usage": {"output_tokens": 2}}),
    sse("message_stop", {"type": "message_stop"}),
]  # fmt: skip
MESSAGE_JSON = json.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "Hi there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 2},
    }
).encode()

USAGE = Usage(prompt_tokens=7, completion_tokens=2, total_tokens=9)


def stream_events(
    events: list[bytes],
    *,
    prefill: float = 0.0,
    fail_after: int | None = None,
    gap: float = 0.0,
) -> Script:
    """Answer with ``events`` after ``prefill`` seconds; with ``fail_after``, break off after
    that many events as a dying model server would (``UPSTREAM_INTERRUPTED``)."""

    async def script(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        if prefill:
            await asyncio.sleep(prefill)
        for i, event in enumerate(events):
            if fail_after is not None and i == fail_after:
                await stream.end(
                    error=StreamError(
                        code=int(ErrorCode.UPSTREAM_INTERRUPTED), message="server died"
                    )
                )
                return
            if gap:
                await asyncio.sleep(gap)
            await stream.data(event)
        await stream.end(usage=USAGE)

    return script


def answer_json(body: bytes, status: int = 200) -> Script:
    async def script(stream: PeerStream) -> None:
        await stream.head(status, [("content-type", "application/json")])
        await stream.data(body)
        await stream.end(usage=USAGE if status == 200 else None)

    return script
