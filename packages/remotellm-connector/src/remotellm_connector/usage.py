"""Token usage read from a response body as it passes, without slowing the bytes down.

Every server puts the usage at the end: the last JSON object of a non-streaming answer, the
usage-only chunk (``"choices":[]``) just before ``data: [DONE]`` of a chat stream, the
``response.completed`` event of a Responses stream, the ``message_delta`` of an Anthropic one.
So the tap keeps only the last few KiB it forwarded and reads the numbers once, when the body
is complete: per chunk it costs a deque append, never a JSON parse. Both OpenAI's names
(``prompt_tokens``/``completion_tokens``) and the Responses and Anthropic names
(``input_tokens``/``output_tokens``) count.

An Anthropic stream states its input tokens only at the start (``message_start``), and its
closing ``message_delta`` may carry output tokens alone; so the tap also keeps the first few
KiB, read only when the tail has no input count.

In ``STRIP`` mode the connector added ``stream_options.include_usage`` itself, and the usage-only
chunk the client never asked for must go. There the tap forwards whole SSE events: a partial
event waits for the rest of itself (a client cannot use half an event anyway), and only a batch
of complete events that contains ``"choices":[]`` is split up and inspected.
"""

import re
from collections import deque
from typing import Final

from remotellm_connector.forward import UsageMode
from remotellm_protocol import Usage

__all__ = ["UsageTap", "parse_usage"]

#: Bytes of the forwarded tail kept for reading the usage: the usage chunk with llama.cpp's
#: ``timings`` is under 1 KiB. Every open stream holds this much, so it is not generous.
TAIL_BYTES: Final = 4096

_USAGE_KEY = re.compile(rb'"usage"\s*:\s*\{')
_FIELD = re.compile(
    rb'"(prompt_tokens|completion_tokens|total_tokens|input_tokens|output_tokens)"\s*:\s*(\d+)'
)
_PROMPT = ("prompt_tokens", "input_tokens")
_COMPLETION = ("completion_tokens", "output_tokens")
_EMPTY_CHOICES: Final = (b'"choices":[]', b'"choices": []')
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n")


def parse_usage(data: bytes, *, first: bool = False) -> Usage | None:
    """The last (or ``first``) ``"usage": {...}`` object in ``data``, or None."""
    found = _usage_fields(data, first=first)
    return None if found is None else _usage(found)


def _usage(found: dict[str, int]) -> Usage:
    prompt = next((found[k] for k in _PROMPT if k in found), 0)
    completion = next((found[k] for k in _COMPLETION if k in found), 0)
    total = found.get("total_tokens", prompt + completion)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


def _usage_fields(data: bytes, *, first: bool = False) -> dict[str, int] | None:
    matches = list(_USAGE_KEY.finditer(data))
    if not matches:
        return None
    start = matches[0 if first else -1].end()
    depth, end = 1, start
    while end < len(data) and depth:  # the extent of the usage object
        byte = data[end]
        depth += (byte == 0x7B) - (byte == 0x7D)
        end += 1
    if depth:
        return None  # cut off
    found: dict[str, int] = {}
    for m in _FIELD.finditer(data, start, end):
        found.setdefault(m.group(1).decode(), int(m.group(2)))  # outer keys come first
    return found or None


class UsageTap:
    """Watches one response body; ``feed`` returns what to forward now."""

    __slots__ = ("_head", "_pending", "_stripped", "_tail", "_tail_len", "mode")

    def __init__(self, mode: UsageMode) -> None:
        self.mode = mode
        self._head = b""
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        self._pending = b""
        self._stripped: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Take the next upstream chunk; return the bytes to send on (may be empty)."""
        if self.mode is UsageMode.STRIP:
            chunk = self._whole_events(chunk)
        if chunk and self.mode is not UsageMode.NONE:
            if len(self._head) < TAIL_BYTES:
                self._head += chunk[: TAIL_BYTES - len(self._head)]
            tail = self._tail
            tail.append(chunk)
            self._tail_len += len(chunk)
            while self._tail_len - len(tail[0]) >= TAIL_BYTES:
                self._tail_len -= len(tail.popleft())
        return chunk

    def finish(self) -> bytes:
        """The body is complete: return what is still held back."""
        rest, self._pending = self._pending, b""
        return rest

    @property
    def usage(self) -> Usage | None:
        """The usage the body reported, once ``finish`` was called."""
        if self._stripped is not None:
            return self._stripped
        if self.mode is UsageMode.NONE or not self._tail:
            return None
        tail = b"".join(self._tail)
        found = _usage_fields(tail)
        if found is not None and not any(k in found for k in _PROMPT):
            opening = _usage_fields(self._head, first=True)  # Anthropic's message_start
            if opening is not None and "input_tokens" in opening:
                found = {**found, "input_tokens": opening["input_tokens"]}
        return None if found is None else _usage(found)

    def _whole_events(self, chunk: bytes) -> bytes:
        if not self._pending and chunk[-2:] == b"\n\n":  # the usual case: whole events
            if _EMPTY_CHOICES[0] in chunk or _EMPTY_CHOICES[1] in chunk:
                return self._strip(chunk)
            return chunk
        data = self._pending + chunk if self._pending else chunk
        cut = _last_event_end(data)
        if cut == 0:
            self._pending = data
            return b""
        self._pending = data[cut:] if cut < len(data) else b""
        ready = data[:cut] if cut < len(data) else data
        if _EMPTY_CHOICES[0] in ready or _EMPTY_CHOICES[1] in ready:
            ready = self._strip(ready)
        return ready

    def _strip(self, events: bytes) -> bytes:
        """Drop usage-only events (empty ``choices`` and a usage object) from ``events``."""
        kept: list[bytes] = []
        pos = 0
        for end in _EVENT_END.finditer(events):
            event = events[pos : end.end()]
            pos = end.end()
            if (_EMPTY_CHOICES[0] in event or _EMPTY_CHOICES[1] in event) and (
                usage := parse_usage(event)
            ):
                self._stripped = usage
                continue
            kept.append(event)
        kept.append(events[pos:])
        return b"".join(kept)


def _last_event_end(data: bytes) -> int:
    """Index just past the last SSE event separator in ``data``, or 0 if there is none."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
