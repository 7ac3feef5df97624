"""Reading a request body into a ``Plan``: what to answer, how fast, and which fault to inject.

Validation follows OpenAI where a relay could get it wrong (``stream_options`` without
``stream`` is a 400 there too), so the demo LLM catches relay bugs instead of hiding them.

Extension fields for tests and the benchmark (ignored by real servers, so harmless to send):

- ``x_ttft_ms`` / ``x_gap_ms``: override the configured time to first token / between tokens.
- ``x_fail_after``: close the connection after that many tokens (non-streaming: send nothing).
- ``x_stall_after``: after that many tokens send nothing more but keep the connection open.
- ``x_status`` (+ ``x_retry_after``): answer at once with that status and an OpenAI error body.
- ``x_response_bytes``: a non-streaming response body of exactly that many bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from remotellm_connector.demo_llm.config import DemoLLMConfig
from remotellm_connector.demo_llm.content import prompt_bytes, prompt_token_count, tag_from
from remotellm_connector.demo_llm.errors import ApiError, injected_error

__all__ = ["Kind", "Plan", "check_model", "plan_generation", "read_body"]

Kind = Literal["chat", "completion"]

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
    prompt_field = "messages" if kind == "chat" else "prompt"
    prompt = body.get(prompt_field)
    if not isinstance(prompt, list | str) or (kind == "chat" and not isinstance(prompt, list)):
        raise ApiError(400, f"'{prompt_field}' is a required property.", param=prompt_field)
    seed = _opt_int(body, "seed", minimum=-(2**63))
    encoded = prompt_bytes(body)
    limit = _opt_int(body, "max_completion_tokens", minimum=1)
    if limit is None:
        limit = _opt_int(body, "max_tokens", minimum=1)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean.", param="stream")
    include_usage = _include_usage(body, stream=bool(stream))
    tool_name = _tool_name(body) if kind == "chat" else None
    finish_reason = "tool_calls" if tool_name else ("length" if limit is not None else "stop")
    ttft_ms = _opt_ms(body, "x_ttft_ms")
    gap_ms = _opt_ms(body, "x_gap_ms")
    return Plan(
        kind=kind,
        model=model,
        tag=tag_from(seed, encoded),
        seed=seed,
        tokens=config.tokens if limit is None else limit,
        finish_reason=finish_reason,
        stream=bool(stream),
        include_usage=include_usage,
        prompt_tokens=prompt_token_count(encoded),
        ttft_s=config.ttft_s if ttft_ms is None else ttft_ms / 1000,
        gap_s=config.gap_s if gap_ms is None else gap_ms / 1000,
        fail_after=_opt_int(body, "x_fail_after", minimum=0),
        stall_after=_opt_int(body, "x_stall_after", minimum=0),
        response_bytes=_opt_int(body, "x_response_bytes", minimum=0),
        tool_name=tool_name,
    )


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


def _tool_name(body: dict[str, Any]) -> str | None:
    """The function the fake model calls: the forced one, else the first; None for no call."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    names: list[str] = []
    for tool in tools if isinstance(tools, list) else [None]:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise ApiError(400, "Each tool needs function.name.", param="tools")
        names.append(name)
    if isinstance(choice, dict):
        function = choice.get("function")
        forced = function.get("name") if isinstance(function, dict) else None
        if forced not in names:
            raise ApiError(400, "tool_choice names a function not in tools.", param="tool_choice")
        return str(forced)
    return names[0]


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
