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

from remotellm_connector.demo_llm.content import iter_tokens, token, tool_argument_pieces
from remotellm_connector.demo_llm.request import Plan

__all__ = ["DONE", "FINGERPRINT", "StreamShape", "full_body", "usage_of"]

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

    Send ``opening + piece(t)`` for the first of ``texts`` (the chat role chunk travels with the
    first token, so the time to the first byte is the time to the first token), then
    ``piece(t)`` for each other one (``count`` in all), then ``closing``.
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
            if plan.tool_name is None:
                self.count = plan.tokens
                self.texts: Iterator[str] = iter_tokens(plan.tag, plan.tokens)
                first: dict[str, object] = {"role": "assistant", "content": "", "refusal": None}
                self._before = head + b'{"content":'
                self._after = b"}" + open_tail
            else:
                self.count = plan.tokens + 2
                self.texts = tool_argument_pieces(plan.tag, plan.tokens)
                call = {"name": plan.tool_name, "arguments": ""}
                first = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"index": 0, "id": f"call_{plan.tag}", "type": "function", "function": call}
                    ],
                }
                self._before = head + b'{"tool_calls":[{"index":0,"function":{"arguments":'
                self._after = b"}}]}" + open_tail
            self.opening = head + _encode(first) + open_tail
            last = head + b'{},"logprobs":null,"finish_reason":' + finish + b"}" + end
        else:
            head += b',"choices":[{"text":'
            self.count = plan.tokens
            self.texts = iter_tokens(plan.tag, plan.tokens)
            self.opening = b""
            self._before = head
            self._after = b',"index":0,"logprobs":null,"finish_reason":null}' + end
            last = head + b'"","index":0,"logprobs":null,"finish_reason":' + finish + b"}" + end
        if plan.include_usage:
            usage_chunk = envelope[:-1] + b',"choices":[],"usage":' + _encode(usage_of(plan))
            last += b"data: " + usage_chunk + b"}\n\n"
        self.closing = last + DONE

    def piece(self, text: str) -> bytes:
        return self._before + _encode(text) + self._after


def full_body(plan: Plan, response_id: str, created: int) -> bytes:
    """A non-streaming response; ``x_response_bytes`` pads the text to that exact body size."""
    body = _envelope(plan, response_id, created, chunk=False)
    text = "".join(iter_tokens(plan.tag, plan.tokens))
    choice: dict[str, Any]
    if plan.kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if plan.tool_name is not None:
            arguments = "".join(tool_argument_pieces(plan.tag, plan.tokens))
            call = {"name": plan.tool_name, "arguments": arguments}
            message["content"] = None
            message["tool_calls"] = [
                {"id": f"call_{plan.tag}", "type": "function", "function": call}
            ]
        choice = {"index": 0, "message": message, "logprobs": None}
    else:
        choice = {"text": text, "index": 0, "logprobs": None}
    choice["finish_reason"] = plan.finish_reason
    body["choices"] = [choice]
    body["usage"] = usage_of(plan)
    if plan.response_bytes is None or plan.tool_name is not None:
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
