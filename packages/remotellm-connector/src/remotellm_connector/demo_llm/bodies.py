"""Response bodies in OpenAI's exact shapes, streaming and not.

Streaming is the benchmark's "direct" baseline, so the per-token cost must stay tiny: the JSON
around a token is encoded once per response, and a token chunk is three byte strings joined
(prefix, the token as a JSON string, suffix). Chunks look like OpenAI's::

    data: {"id":"chatcmpl-…","object":"chat.completion.chunk","created":…,"model":"demo",
           "system_fingerprint":"fp_demo","choices":[{"index":0,"delta":{"content":"tok0-s1 "},
           "logprobs":null,"finish_reason":null}]}

with ``"usage":null`` on every chunk when ``stream_options.include_usage`` is set, and then a
usage-only chunk (``"choices":[]``) before ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from remotellm_connector.demo_llm.content import token
from remotellm_connector.demo_llm.frames import FrameShape
from remotellm_connector.demo_llm.request import Plan
from remotellm_connector.demo_llm.tools import answer_calls, answer_text

__all__ = ["DONE", "FINGERPRINT", "StreamShape", "full_body", "scripted_calls_shape", "usage_of"]

FINGERPRINT = "fp_demo"
DONE = b"data: [DONE]\n\n"
_encode = msgspec.json.Encoder().encode


def usage_of(plan: Plan) -> dict[str, int]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.tokens,
        "total_tokens": plan.prompt_tokens + plan.tokens,
    }


def _envelope(plan: Plan, response_id: str, created: int, *, chunk: bool) -> dict[str, Any]:
    if plan.kind == "chat":
        obj = "chat.completion.chunk" if chunk else "chat.completion"
    else:
        obj = "text_completion"
    return {
        "id": response_id,
        "object": obj,
        "created": created,
        "model": plan.model,
        "system_fingerprint": FINGERPRINT,
    }


class StreamShape:
    """The pre-encoded frame of one SSE response.

    Send ``opening`` with the first of ``chunks()`` (the chat role chunk travels with the
    first token, so the time to the first byte is the time to the first token), then each
    other one (``count`` in all), then ``closing``.
    """

    __slots__ = ("_after", "_before", "closing", "count", "opening", "texts")

    def __init__(self, plan: Plan, response_id: str, created: int) -> None:
        envelope = _encode(_envelope(plan, response_id, created, chunk=True))
        head = b"data: " + envelope[:-1]
        usage_null = b',"usage":null' if plan.include_usage else b""
        end = b"]" + usage_null + b"}\n\n"
        finish = _encode(plan.finish_reason)
        if plan.kind == "chat":
            head += b',"choices":[{"index":0,"delta":'
            open_tail = b',"logprobs":null,"finish_reason":null}' + end
            calls = answer_calls(plan)
            if not calls:
                self.count = plan.tokens
                self.texts: Iterator[str] = answer_text(plan)
                first: dict[str, object] = {"role": "assistant", "content": "", "refusal": None}
                self._before = head + b'{"content":'
                self._after = b"}" + open_tail
            else:
                self.count = len(calls[0].pieces)
                self.texts = iter(calls[0].pieces)
                call = {"name": calls[0].name, "arguments": ""}
                first = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"index": 0, "id": calls[0].id, "type": "function", "function": call}
                    ],
                }
                self._before = head + b'{"tool_calls":[{"index":0,"function":{"arguments":'
                self._after = b"}}]}" + open_tail
            self.opening = head + _encode(first) + open_tail
            last = head + b'{},"logprobs":null,"finish_reason":' + finish + b"}" + end
        else:
            head += b',"choices":[{"text":'
            self.count = plan.tokens
            self.texts = answer_text(plan)
            self.opening = b""
            self._before = head
            self._after = b',"index":0,"logprobs":null,"finish_reason":null}' + end
            last = head + b'"","index":0,"logprobs":null,"finish_reason":' + finish + b"}" + end
        if plan.include_usage:
            usage_chunk = envelope[:-1] + b',"choices":[],"usage":' + _encode(usage_of(plan))
            last += b"data: " + usage_chunk + b"}\n\n"
        self.closing = last + DONE

    def chunks(self) -> Iterator[bytes]:
        before, after = self._before, self._after
        return (before + _encode(text) + after for text in self.texts)


def full_body(plan: Plan, response_id: str, created: int) -> bytes:
    """A non-streaming response; ``x_response_bytes`` pads the text to that exact body size."""
    body = _envelope(plan, response_id, created, chunk=False)
    text = "".join(answer_text(plan))
    choice: dict[str, Any]
    calls = answer_calls(plan) if plan.kind == "chat" else []
    if plan.kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if calls:
            message["content"] = text or None
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in calls
            ]
        choice = {"index": 0, "message": message, "logprobs": None}
    else:
        choice = {"text": text, "index": 0, "logprobs": None}
    choice["finish_reason"] = plan.finish_reason
    body["choices"] = [choice]
    body["usage"] = usage_of(plan)
    if plan.response_bytes is None or calls:
        return _encode(body)
    key = "message" if plan.kind == "chat" else None
    _set_text(choice, key, "")
    need = plan.response_bytes - len(_encode(body))
    if need > 0:
        pattern = "".join(token(plan.tag, k) for k in range(64))
        _set_text(choice, key, (pattern * (need // len(pattern) + 1))[:need])
    return _encode(body)


def _set_text(choice: dict[str, Any], key: str | None, text: str) -> None:
    if key is None:
        choice["text"] = text
    else:
        choice[key]["content"] = text


def scripted_calls_shape(plan: Plan, response_id: str, created: int) -> FrameShape:
    """A chat stream of scripted text and several tool calls (the fast shape has one call)."""
    envelope = _envelope(plan, response_id, created, chunk=True)
    usage_null = {"usage": None} if plan.include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _encode({**envelope, "choices": [choice], **usage_null}) + b"\n\n"

    opening = chunk({"role": "assistant", "content": "", "refusal": None})
    deltas = [chunk({"content": piece}) for piece in answer_text(plan)]
    for index, call in enumerate(answer_calls(plan)):
        function = {"name": call.name, "arguments": ""}
        head = {"index": index, "id": call.id, "type": "function", "function": function}
        frames = [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in call.pieces
        ]
        deltas.append(chunk({"tool_calls": [head]}))
        deltas += frames
    closing = chunk({}, plan.finish_reason)
    if plan.include_usage:
        usage = {**envelope, "choices": [], "usage": usage_of(plan)}
        closing += b"data: " + _encode(usage) + b"\n\n"
    return FrameShape(opening, deltas, closing + DONE)
