"""Scripted answers: what the demo LLM says to one request, chosen by the request itself.

Without a script every answer is the deterministic ``tok{k}-{tag}`` text, or, when tools are
offered and the last message is not a tool's result, a call of the first tool (so an agent
that runs the call and sends its result gets text and ends its turn). To drive an agent to
the end of a task, a request may instead get a ``Reply``:

- **inline**: the text of the request's last message (or last Responses input item; system and
  developer messages do not count) contains
  ``[[demo-reply {JSON}]]``, e.g. a prompt ending in
  ``[[demo-reply {"tool_calls": [{"name": "Write", "arguments": {"file_path": "a.txt",
  "content": "hi"}}]}]]``. The tool result that the agent sends next no longer contains it, so
  the next turn gets the default text and the agent stops: a two-turn task needs nothing else.
- **a script file** (``demo-llm --script FILE``, ``DemoLLMConfig(script=...)``): a YAML or JSON
  list of rules, the first match wins::

      - match: "create hello\\.txt"      # regex searched in the last message's text
        api: messages                    # optional: chat, completion, responses, messages
        reply: {tool_calls: [{name: Write, arguments: {file_path: hello.txt, content: hi}}]}
      - match: "File created"
        reply: {text: "Done: hello.txt is written."}

A reply that calls tools applies only to a request that offers all of them (agents send side
requests, such as title generation, without tools). Reply fields: ``text``, ``tool_calls``
(``name``, ``arguments`` as an object or a JSON string, optional ``id``), ``status`` (+
``retry_after``), ``tokens`` (length of the default text), ``delay_ms`` (time to first
token), ``gap_ms``, ``fail_after``, ``stall_after``. The request's own ``x_*`` fields win over
the reply's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

__all__ = [
    "Reply",
    "Rule",
    "ScriptError",
    "ToolCall",
    "answers_a_tool",
    "inline_reply",
    "last_message_text",
    "load_script",
    "parse_rules",
    "pick_reply",
]

_MARKER = re.compile(r"\[\[demo-reply\s+(.*?)\]\]", re.DOTALL)
_TEXT_KEYS = frozenset({"text", "content", "output"})
_INSTRUCTION_ROLES = frozenset({"system", "developer"})
_TOOL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})


class ScriptError(ValueError):
    """A script file or an inline marker that is not a valid reply."""


class ToolCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    arguments: dict[str, Any] | str = msgspec.field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return msgspec.json.encode(self.arguments).decode()


class Reply(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    status: int | None = None
    retry_after: int | None = None
    tokens: int | None = None
    delay_ms: float | None = None
    gap_ms: float | None = None
    fail_after: int | None = None
    stall_after: int | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not 200 <= self.status <= 599:
            raise ScriptError(f"status must be 200..599, got {self.status}")
        for name in ("tokens", "delay_ms", "gap_ms", "fail_after", "stall_after", "retry_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ScriptError(f"{name} must be >= 0, got {value}")
        if any(not call.name for call in self.tool_calls):
            raise ScriptError("every tool call needs a name")


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reply: Reply
    match: str | None = None
    api: str | None = None

    def __post_init__(self) -> None:
        if self.api not in (None, "chat", "completion", "responses", "messages"):
            raise ScriptError(f"api must be chat, completion, responses or messages: {self.api}")
        if self.match is not None:
            try:
                re.compile(self.match)
            except re.error as exc:
                raise ScriptError(f"match {self.match!r} is not a regex: {exc}") from None

    def applies(self, api: str, text: str, tools: frozenset[str]) -> bool:
        if self.api is not None and self.api != api:
            return False
        if self.match is not None and re.search(self.match, text) is None:
            return False
        return all(call.name in tools for call in self.reply.tool_calls)


def parse_rules(raw: object) -> tuple[Rule, ...]:
    """Rules from decoded YAML/JSON (a list of rule objects)."""
    try:
        return msgspec.convert(raw, tuple[Rule, ...])
    except (msgspec.ValidationError, ScriptError) as exc:
        raise ScriptError(f"demo LLM script: {exc}") from None


def load_script(path: Path) -> tuple[Rule, ...]:
    """Read a script file (YAML, of which JSON is a subset)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScriptError(f"demo LLM script {path}: {exc}") from None
    return parse_rules(raw or [])


def last_message_text(prompt: object) -> str:
    """The text of the last message or input item that is not a system or developer message
    (Claude Code appends its environment as a system message): every string under
    text/content/output."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        for item in reversed(prompt):
            if not (isinstance(item, Mapping) and item.get("role") in _INSTRUCTION_ROLES):
                return "\n".join(_strings(item))
    return ""


def answers_a_tool(prompt: object) -> bool:
    """Whether the last message (as ``last_message_text`` picks it) carries a tool's result:
    a chat ``tool`` message, a Responses ``function_call_output`` or an Anthropic
    ``tool_result`` block."""
    if not isinstance(prompt, list):
        return False
    for item in reversed(prompt):
        if not isinstance(item, Mapping):
            return False
        if item.get("role") in _INSTRUCTION_ROLES:
            continue
        if item.get("role") == "tool" or item.get("type") in _TOOL_OUTPUTS:
            return True
        content = item.get("content")
        return isinstance(content, list) and any(
            isinstance(block, Mapping) and block.get("type") == "tool_result" for block in content
        )
    return False


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key in _TEXT_KEYS:
                yield from _strings(item)


def inline_reply(text: str) -> Reply | None:
    """The reply a ``[[demo-reply {...}]]`` marker asks for (the last marker wins)."""
    found = _MARKER.findall(text)
    if not found:
        return None
    try:
        return msgspec.json.decode(found[-1].encode(), type=Reply)
    except (msgspec.DecodeError, msgspec.ValidationError, ScriptError) as exc:
        raise ScriptError(f"[[demo-reply ...]] marker: {exc}") from None


def pick_reply(
    rules: tuple[Rule, ...], api: str, prompt: object, tools: frozenset[str]
) -> Reply | None:
    """The inline marker's reply if usable, else the first rule that applies, else None."""
    text = last_message_text(prompt)
    inline = inline_reply(text)
    if inline is not None and all(call.name in tools for call in inline.tool_calls):
        return inline
    for rule in rules:
        if rule.applies(api, text, tools):
            return rule.reply
    return None
