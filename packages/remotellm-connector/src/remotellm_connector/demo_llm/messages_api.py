"""``POST /v1/messages`` in Anthropic's shapes: the message object and its named SSE events.

A streamed answer is what api.anthropic.com sends, and what the anthropic SDKs and Claude Code
parse::

    event: message_start        {"type": "message_start", "message": {... "content": [], usage}}
    event: content_block_start  {"index": 0, "content_block": {"type": "text", "text": ""}}
    event: ping                 {"type": "ping"}
    event: content_block_delta  {"index": 0, "delta": {"type": "text_delta", "text": ...}} (n times)
    event: content_block_stop   {"index": 0}
    per tool call: content_block_start (tool_use, "input": {}), content_block_delta
    (input_json_delta, partial_json) (n times), content_block_stop
    event: message_delta        {"delta": {"stop_reason", "stop_sequence"}, "usage": {...}}
    event: message_stop

``count_tokens`` answers ``{"input_tokens": n}`` by the same count as the usage.
"""

from __future__ import annotations

from typing import Any

import msgspec

from remotellm_connector.demo_llm.frames import FrameShape, sse_event
from remotellm_connector.demo_llm.request import Plan
from remotellm_connector.demo_llm.tools import answer_calls, answer_text

__all__ = ["message_body", "message_shape", "stop_reason"]

_encode = msgspec.json.Encoder().encode
_STOP = {"tool_calls": "tool_use", "length": "max_tokens", "stop": "end_turn"}


def stop_reason(plan: Plan) -> str:
    return _STOP[plan.finish_reason]


def _usage(plan: Plan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _message(plan: Plan, message_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(plan, 1),
    }


def message_body(plan: Plan, message_id: str) -> bytes:
    """The non-streaming answer."""
    message = _message(plan, message_id)
    content: list[dict[str, Any]] = []
    text = "".join(answer_text(plan))
    calls = answer_calls(plan)
    if text or not calls:
        content.append({"type": "text", "text": text})
    for call in calls:
        arguments = msgspec.json.decode(call.arguments) if call.arguments else {}
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    message.update(content=content, stop_reason=stop_reason(plan), usage=_usage(plan, plan.tokens))
    return _encode(message)


def message_shape(plan: Plan, message_id: str) -> FrameShape:
    """The streamed answer as frames (see the module docstring)."""

    def event(name: str, **fields: Any) -> bytes:
        return sse_event(name, {"type": name, **fields})

    opening = event("message_start", message=_message(plan, message_id))
    deltas: list[bytes] = []
    closing = b""
    pieces = list(answer_text(plan))
    calls = answer_calls(plan)
    index = 0
    if pieces or not calls:
        block = {"type": "text", "text": ""}
        opening += event("content_block_start", index=0, content_block=block)
        opening += event("ping")
        deltas += [
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": p})
            for p in pieces
        ]
        stop = event("content_block_stop", index=0)
        if deltas and calls:
            deltas[-1] += stop
        else:
            closing += stop
        index = 1
    elif calls:
        opening += event("ping")
    for call in calls:
        tool_block: dict[str, Any] = {"type": "tool_use", "id": call.id, "name": call.name}
        tool_block["input"] = {}
        start = event("content_block_start", index=index, content_block=tool_block)
        frames = [
            event(
                "content_block_delta",
                index=index,
                delta={"type": "input_json_delta", "partial_json": p},
            )
            for p in call.pieces
        ] or [b""]
        frames[0] = start + frames[0]
        frames[-1] += event("content_block_stop", index=index)
        deltas += frames
        index += 1
    closing += event(
        "message_delta",
        delta={"stop_reason": stop_reason(plan), "stop_sequence": None},
        usage={"output_tokens": plan.tokens},
    )
    closing += event("message_stop")
    return FrameShape(opening, deltas, closing)
