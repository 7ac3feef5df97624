"""Tools as each API offers them, and the answer's pieces as they are streamed.

Chat completions nest the name (``{"type": "function", "function": {"name": …}}``), the
Responses API does not (``{"type": "function", "name": …}``), and Anthropic has no type for
client tools (``{"name": …, "input_schema": …}``). Tools the model cannot call as a function
(Responses' built-ins such as ``web_search``, Anthropic's server tools) are offered but have no
function name here, so they are skipped rather than refused; Codex sends a few of those.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remotellm_connector.demo_llm.content import iter_tokens, tool_argument_pieces
from remotellm_connector.demo_llm.errors import ApiError

if TYPE_CHECKING:
    from remotellm_connector.demo_llm.request import Plan

__all__ = [
    "Call",
    "answer_calls",
    "answer_text",
    "argument_pieces",
    "offered_tools",
    "text_pieces",
]

_PIECE = re.compile(r"\s*\S+\s*|\s+")
_ARGUMENT_PIECE = 16


def offered_tools(body: dict[str, Any], kind: str) -> tuple[str, ...]:
    """The names of the functions the request lets the model call, in order."""
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise ApiError(400, "'tools' must be an array.", param="tools")
    names: list[str] = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise ApiError(400, "Each tool must be an object.", param="tools")
        if kind == "chat":
            function = tool.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name:
                raise ApiError(400, "Each tool needs function.name.", param="tools")
        elif kind == "responses":
            name = tool.get("name") if tool.get("type") in ("function", "custom") else None
        else:
            name = tool.get("name") if tool.get("type") in (None, "custom") else None
            if tool.get("type") is None and not isinstance(name, str):
                raise ApiError(400, "tools: each tool needs a name.", param="tools")
        if isinstance(name, str) and name:
            names.append(name)
    return tuple(names)


def text_pieces(text: str) -> list[str]:
    """A scripted text as it is streamed: one piece per word with its surrounding spaces."""
    pieces: list[str] = _PIECE.findall(text)
    return pieces


def argument_pieces(arguments: str) -> list[str]:
    """A scripted call's JSON arguments as they are streamed: 16 characters at a time."""
    step = _ARGUMENT_PIECE
    return [arguments[i : i + step] for i in range(0, len(arguments), step)]


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call of an answer: its id, function name and streamed argument pieces."""

    id: str
    name: str
    pieces: tuple[str, ...]

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)


def answer_text(plan: Plan) -> Iterator[str]:
    """The text pieces of the answer (none when it only calls tools)."""
    if plan.text is not None:
        return iter(text_pieces(plan.text))
    if plan.calls or plan.tool_name is not None:
        return iter(())
    return iter_tokens(plan.tag, plan.tokens)


def answer_calls(plan: Plan) -> list[Call]:
    """The tool calls of the answer: the scripted ones, else the default call, else none."""
    prefix = "toolu_" if plan.kind == "messages" else "call_"
    if plan.calls:
        return [
            Call(
                call.id or f"{prefix}{plan.tag}_{i}",
                call.name,
                tuple(argument_pieces(call.arguments_json())),
            )
            for i, call in enumerate(plan.calls)
        ]
    if plan.tool_name is not None and plan.text is None:
        pieces = tuple(tool_argument_pieces(plan.tag, plan.tokens))
        return [Call(f"{prefix}{plan.tag}", plan.tool_name, pieces)]
    return []
