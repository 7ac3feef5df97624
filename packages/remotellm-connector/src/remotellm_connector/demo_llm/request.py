"""Reading a request body into a ``Plan``: what to answer, how fast, and which fault to inject.

Validation follows OpenAI where a relay could get it wrong (``stream_options`` without
``stream`` is a 400 there too), so the demo LLM catches relay bugs instead of hiding them.

Extension fields for tests and the benchmark (ignored by real servers, so harmless to send):

- ``x_ttft_ms`` / ``x_gap_ms``: override the configured time to first token / between tokens.
- ``x_fail_after``: close the connection after that many tokens (non-streaming: send nothing).
- ``x_stall_after``: after that many tokens send nothing more but keep the connection open.
- ``x_status`` (+ ``x_retry_after``): answer at once with that status and an OpenAI error body.
- ``x_response_bytes``: a non-streaming response body of exactly that many bytes.
- ``x_tokens``: the number of tokens of the default answer (else ``max_tokens`` for chat and
  completions, else the configured count; Responses and Messages take the smaller of their
  ``max_output_tokens``/``max_tokens`` and the configured count, as agents ask for 32 000).

A scripted ``Reply`` (``script``: an inline ``[[demo-reply {...}]]`` marker or a rule of the
script file) may set the text, the tool calls, a status and the same timings and faults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from remotellm_connector.demo_llm.config import DemoLLMConfig
from remotellm_connector.demo_llm.content import prompt_bytes, prompt_token_count, tag_from
from remotellm_connector.demo_llm.errors import ApiError, injected_error
from remotellm_connector.demo_llm.script import (
    Reply,
    ScriptError,
    ToolCall,
    answers_a_tool,
    pick_reply,
)
from remotellm_connector.demo_llm.tools import argument_pieces, offered_tools, text_pieces

__all__ = ["Kind", "Plan", "check_model", "plan_generation", "read_body"]

Kind = Literal["chat", "completion", "responses", "messages"]

_PROMPT_FIELD: dict[str, str] = {
    "chat": "messages",
    "completion": "prompt",
    "responses": "input",
    "messages": "messages",
}

_decode = msgspec.json.decode


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    kind: Kind
    model: str
    tag: str
    seed: int | None
    tokens: int
    finish_reason: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    ttft_s: float
    gap_s: float
    fail_after: int | None
    stall_after: int | None
    response_bytes: int | None
    tool_name: str | None
    text: str | None = None
    """Scripted answer text (``tokens`` is then its piece count plus the tool calls' pieces)."""
    calls: tuple[ToolCall, ...] = ()
    """Scripted tool calls; without them, ``tool_name`` is the default call's function."""


def read_body(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body, then honour ``x_status`` before anything else is checked."""
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    status = _opt_int(body, "x_status", minimum=100)
    if status is not None and status >= 300:
        raise injected_error(min(status, 599), _opt_int(body, "x_retry_after", minimum=0))
    return body


def check_model(body: dict[str, Any], config: DemoLLMConfig) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "You must provide a model parameter.", param="model")
    if model not in config.models:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return model


def plan_generation(body: dict[str, Any], kind: Kind, config: DemoLLMConfig) -> Plan:
    model = check_model(body, config)
    prompt_field = _PROMPT_FIELD[kind]
    prompt = body.get(prompt_field)
    listed = isinstance(prompt, list)
    if not (listed or isinstance(prompt, str)) or (kind in ("chat", "messages") and not listed):
        raise ApiError(400, f"'{prompt_field}' is a required property.", param=prompt_field)
    seed = _opt_int(body, "seed", minimum=-(2**63))
    encoded = prompt_bytes(body)
    limit = _limit(body, kind)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean.", param="stream")
    openai_legacy = kind in ("chat", "completion")
    include_usage = _include_usage(body, stream=bool(stream)) if openai_legacy else False
    tools = offered_tools(body, kind) if kind != "completion" else ()
    try:
        reply = pick_reply(config.script, kind, prompt, frozenset(tools))
    except ScriptError as exc:
        raise ApiError(400, str(exc)) from None
    reply = reply or Reply()
    if reply.status is not None and reply.status >= 300:
        raise injected_error(reply.status, reply.retry_after)
    tokens = _opt_int(body, "x_tokens", minimum=0)
    tokens = reply.tokens if tokens is None else tokens
    if tokens is None:
        tokens = _default_tokens(kind, limit, config.tokens)
    tool_name = None
    if kind != "completion" and not answers_a_tool(prompt):
        tool_name = _tool_name(body, kind, tools)
    if reply.text is not None or reply.tool_calls:
        tool_name = None
        tokens = len(text_pieces(reply.text or "")) + sum(
            len(argument_pieces(call.arguments_json())) for call in reply.tool_calls
        )
    if tool_name or reply.tool_calls:
        finish_reason = "tool_calls"
    elif limit is not None and reply.text is None and tokens >= limit:
        finish_reason = "length"
    else:
        finish_reason = "stop"
    ttft_ms = _opt_ms(body, "x_ttft_ms")
    gap_ms = _opt_ms(body, "x_gap_ms")
    ttft_ms = reply.delay_ms if ttft_ms is None else ttft_ms
    gap_ms = reply.gap_ms if gap_ms is None else gap_ms
    fail_after = _opt_int(body, "x_fail_after", minimum=0)
    stall_after = _opt_int(body, "x_stall_after", minimum=0)
    return Plan(
        kind=kind,
        model=model,
        tag=tag_from(seed, encoded),
        seed=seed,
        tokens=tokens,
        finish_reason=finish_reason,
        stream=bool(stream),
        include_usage=include_usage,
        prompt_tokens=prompt_token_count(encoded),
        ttft_s=config.ttft_s if ttft_ms is None else ttft_ms / 1000,
        gap_s=config.gap_s if gap_ms is None else gap_ms / 1000,
        fail_after=reply.fail_after if fail_after is None else fail_after,
        stall_after=reply.stall_after if stall_after is None else stall_after,
        response_bytes=_opt_int(body, "x_response_bytes", minimum=0),
        tool_name=tool_name,
        text=reply.text,
        calls=reply.tool_calls,
    )


def _limit(body: dict[str, Any], kind: Kind) -> int | None:
    if kind == "responses":
        return _opt_int(body, "max_output_tokens", minimum=1)
    if kind == "messages":
        limit = _opt_int(body, "max_tokens", minimum=1)
        if limit is None:
            raise ApiError(400, "max_tokens: Field required", param="max_tokens")
        return limit
    limit = _opt_int(body, "max_completion_tokens", minimum=1) if kind == "chat" else None
    return _opt_int(body, "max_tokens", minimum=1) if limit is None else limit


def _default_tokens(kind: Kind, limit: int | None, configured: int) -> int:
    if limit is None:
        return configured
    if kind in ("responses", "messages"):
        return min(limit, configured)
    return limit


def _include_usage(body: dict[str, Any], *, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise ApiError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise ApiError(400, "'stream_options' must be an object.", param="stream_options")
    return bool(options.get("include_usage", False))


def _tool_name(body: dict[str, Any], kind: Kind, tools: tuple[str, ...]) -> str | None:
    """The function the fake model calls by default: the forced one, else the first."""
    choice = body.get("tool_choice")
    if not tools or choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    forced: object = None
    if isinstance(choice, dict):
        function = choice.get("function")
        forced = function.get("name") if isinstance(function, dict) else choice.get("name")
        if forced is None and kind != "chat":
            return tools[0]  # {"type": "auto"} / {"type": "any"} / {"type": "required"}
        if forced not in tools:
            raise ApiError(400, "tool_choice names a function not in tools.", param="tool_choice")
        return str(forced)
    return tools[0]


def _opt_int(body: dict[str, Any], name: str, *, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ApiError(400, f"'{name}' must be an integer >= {minimum}.", param=name)
    return value


def _opt_ms(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ApiError(400, f"'{name}' must be a number >= 0.", param=name)
    return float(value)
