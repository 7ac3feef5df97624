"""``POST /v1/responses`` in OpenAI's shapes: the response object and its named SSE events.

A streamed answer is what api.openai.com sends, and what the openai SDKs, the Agents SDK and
Codex parse::

    event: response.created            {"type", "sequence_number", "response": {... in_progress}}
    event: response.in_progress
    event: response.output_item.added  (a message item)
    event: response.content_part.added (an output_text part)
    event: response.output_text.delta  (n times) {"item_id", "output_index", "delta", ...}
    event: response.output_text.done / response.content_part.done / response.output_item.done
    per tool call: response.output_item.added (function_call),
    response.function_call_arguments.delta (n times), response.function_call_arguments.done,
    response.output_item.done
    event: response.completed          {"response": {... "status": "completed", "usage": {...}}}

There is no ``data: [DONE]``. A token limit reached makes the last event
``response.incomplete`` (``incomplete_details.reason = "max_output_tokens"``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from remotellm_connector.demo_llm.frames import FrameShape, sse_event
from remotellm_connector.demo_llm.request import Plan
from remotellm_connector.demo_llm.tools import Call, answer_calls, answer_text

__all__ = ["response_body", "response_shape"]

_encode = msgspec.json.Encoder().encode


def _usage(plan: Plan) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": plan.tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.prompt_tokens + plan.tokens,
    }


def _response(plan: Plan, response_id: str, created: int, body: dict[str, Any]) -> dict[str, Any]:
    """The response object as ``response.created`` carries it (in progress, no output)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": plan.model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content if status == "completed" else [],
    }


def _call_item(call: Call, item_id: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": call.arguments if status == "completed" else "",
        "call_id": call.id,
        "name": call.name,
    }


def _finish(plan: Plan, response: dict[str, Any], output: list[dict[str, Any]]) -> str:
    """Fill in the final response object; the name of the terminal event."""
    incomplete = plan.finish_reason == "length"
    response["status"] = "incomplete" if incomplete else "completed"
    if incomplete:
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    response["output"] = output
    response["usage"] = _usage(plan)
    return "response.incomplete" if incomplete else "response.completed"


def response_body(plan: Plan, response_id: str, body: dict[str, Any], created: int) -> bytes:
    """The non-streaming answer: the finished response object."""
    response = _response(plan, response_id, created, body)
    output = _output(plan, response_id)
    _finish(plan, response, output)
    return _encode(response)


def _output(plan: Plan, response_id: str) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    text = "".join(answer_text(plan))
    if text or not answer_calls(plan):
        output.append(_message_item("msg_" + response_id[5:], text, "completed"))
    for i, call in enumerate(answer_calls(plan)):
        output.append(_call_item(call, f"fc_{response_id[5:]}_{i}", "completed"))
    return output


def response_shape(plan: Plan, response_id: str, body: dict[str, Any], created: int) -> FrameShape:
    """The streamed answer as frames (see the module docstring)."""
    seq = iter(range(1 << 30))
    response = _response(plan, response_id, created, body)

    def event(event_type: str, **fields: Any) -> bytes:
        return sse_event(event_type, {"type": event_type, "sequence_number": next(seq), **fields})

    opening = event("response.created", response=response)
    opening += event("response.in_progress", response=response)
    deltas: list[bytes] = []
    output: list[dict[str, Any]] = []
    closing = b""
    pieces = list(answer_text(plan))
    calls = answer_calls(plan)
    if pieces or not calls:
        item_id = "msg_" + response_id[5:]
        ids = {"item_id": item_id, "output_index": 0, "content_index": 0}
        opening += event(
            "response.output_item.added",
            output_index=0,
            item=_message_item(item_id, "", "in_progress"),
        )
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        opening += event("response.content_part.added", **ids, part=part)
        deltas += [event("response.output_text.delta", **ids, delta=p, logprobs=[]) for p in pieces]
        text = "".join(pieces)
        after = event("response.output_text.done", **ids, text=text, logprobs=[])
        after += event("response.content_part.done", **ids, part={**part, "text": text})
        done_item = _message_item(item_id, text, "completed")
        after += event("response.output_item.done", output_index=0, item=done_item)
        output.append(done_item)
        if calls:
            deltas[-1] += after
        else:
            closing += after
    for call in calls:
        index = len(output)
        item_id = f"fc_{response_id[5:]}_{index}"
        added = event(
            "response.output_item.added",
            output_index=index,
            item=_call_item(call, item_id, "in_progress"),
        )
        ids = {"item_id": item_id, "output_index": index}
        delta = "response.function_call_arguments.delta"
        frames = [event(delta, **ids, delta=p) for p in call.pieces]
        frames = frames or [b""]
        frames[0] = added + frames[0]
        after = event(
            "response.function_call_arguments.done", **ids, name=call.name, arguments=call.arguments
        )
        done_item = _call_item(call, item_id, "completed")
        after += event("response.output_item.done", output_index=index, item=done_item)
        output.append(done_item)
        frames[-1] += after
        deltas += frames
    terminal = _finish(plan, response, output)
    closing += event(terminal, response=response)
    return FrameShape(opening, deltas, closing)
