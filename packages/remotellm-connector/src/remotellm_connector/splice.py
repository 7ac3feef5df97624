"""Setting ``stream_options.include_usage`` in a JSON request body without re-encoding it: pure.

The body may be 16 MiB of someone's prompt. Decoding it into Python objects and encoding it
again costs many times its size and stalls the event loop, and it would also change bytes
the client chose (number formats, escapes, key order). Instead this module finds the spans
of the top-level members with a small byte scanner and splices new bytes in: one copy of the
body, every other byte as the client sent it.

``with_include_usage`` handles whatever a valid JSON object may hold:

- no ``stream_options``: ``"stream_options":{"include_usage":true}`` goes in after the ``{``;
- ``stream_options`` an object: each ``include_usage`` member's value becomes ``true``, or the
  member is added after that object's ``{``; its other options stay as they were;
- ``stream_options`` ``null`` (or any non-object): the value becomes ``{"include_usage":true}``;
- the key repeated (legal JSON, and parsers disagree on which one wins): every occurrence is
  patched, so the result is the same whichever one the model server keeps;
- keys written with escapes (``"stream\\u005foptions"``) are decoded before they are compared.

The caller must have checked that ``body`` is a JSON object (a msgspec decode did): the scanner
trusts the grammar and raises ``ValueError`` on anything it does not expect. It walks only the
top level and the ``stream_options`` object; nested values are skipped token by token, which
is linear in the body but runs in Python, so large bodies are planned off the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

import msgspec

__all__ = ["with_include_usage"]

_WS: Final = re.compile(rb"[ \t\n\r]*")
_SCALAR: Final = re.compile(rb"[^ \t\n\r,\]}]+")
#: A quote or a bracket: enough to find where a nested value ends.
_STRUCTURAL: Final = re.compile(rb'["\[\]{}]')
#: No key we look for is longer than this, even with every character as a ``\uXXXX`` escape.
_MAX_KEY_BYTES: Final = 2 + 6 * len("stream_options")

_QUOTE, _COLON, _COMMA, _BACKSLASH = ord('"'), ord(":"), ord(","), ord("\\")
_OPENERS: Final = frozenset(b"[{")
_LBRACE, _RBRACE = ord("{"), ord("}")

_OPTIONS: Final = b'"stream_options":{"include_usage":true}'
_OPTION: Final = b'"include_usage":true'
_TRUE: Final = b"true"

Pieces = list[bytes | memoryview]


def with_include_usage(body: bytes) -> bytes:
    """``body`` (a JSON object) with ``stream_options.include_usage`` set to ``true``."""
    view = memoryview(body)
    start = _skip_ws(body, 0)
    _expect(body, start, _LBRACE)
    pieces: Pieces = []
    done = 0
    for key, value_start, value_end in _members(body, start):
        if key == "stream_options":
            pieces.append(view[done:value_start])
            pieces += _patched_options(body, value_start, value_end)
            done = value_end
    if not pieces:  # no stream_options member at all
        return _insert_first(body, start, _OPTIONS)
    pieces.append(view[done:])
    return b"".join(pieces)


def _patched_options(body: bytes, start: int, end: int) -> Pieces:
    """The pieces that replace the ``stream_options`` value at ``body[start:end]``."""
    if body[start] != _LBRACE:
        return [b"{" + _OPTION + b"}"]
    view = memoryview(body)
    pieces: Pieces = []
    done = start
    for key, value_start, value_end in _members(body, start):
        if key == "include_usage":
            pieces += [view[done:value_start], _TRUE]
            done = value_end
    if not pieces:
        return [_insert_first(body[start:end], 0, _OPTION)]
    pieces.append(view[done:end])
    return pieces


def _insert_first(body: bytes, brace: int, member: bytes) -> bytes:
    """``member`` as the first member of the object whose ``{`` is at ``body[brace]``."""
    after = brace + 1
    empty = body[_skip_ws(body, after)] == _RBRACE
    view = memoryview(body)
    return b"".join((view[:after], member, b"" if empty else b",", view[after:]))


def _members(body: bytes, brace: int) -> Iterator[tuple[str | None, int, int]]:
    """``(key, value start, value end)`` of each member of the object at ``body[brace]``;
    the key is None when it is too long to be one we look for."""
    pos = _skip_ws(body, brace + 1)
    if body[pos] == _RBRACE:
        return
    while True:
        _expect(body, pos, _QUOTE)
        key_end = _string_end(body, pos)
        key = _key(body, pos, key_end)
        pos = _skip_ws(body, key_end)
        _expect(body, pos, _COLON)
        value_start = _skip_ws(body, pos + 1)
        value_end = _value_end(body, value_start)
        yield key, value_start, value_end
        pos = _skip_ws(body, value_end)
        if body[pos] == _RBRACE:
            return
        _expect(body, pos, _COMMA)
        pos = _skip_ws(body, pos + 1)


def _key(body: bytes, start: int, end: int) -> str | None:
    if end - start > _MAX_KEY_BYTES:
        return None
    raw = body[start:end]
    if b"\\" not in raw:
        return raw[1:-1].decode("utf-8", "replace")
    try:
        key = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return key if isinstance(key, str) else None


def _value_end(body: bytes, pos: int) -> int:
    first = body[pos]
    if first == _QUOTE:
        return _string_end(body, pos)
    if first not in _OPENERS:
        return _match(_SCALAR, body, pos)
    depth = 0
    while (found := _STRUCTURAL.search(body, pos)) is not None:
        char = body[found.start()]
        if char == _QUOTE:
            pos = _string_end(body, found.start())
            continue
        pos = found.end()
        depth += 1 if char in _OPENERS else -1
        if depth == 0:
            return pos
    raise ValueError("unterminated JSON value")


def _string_end(body: bytes, pos: int) -> int:
    """The end of the string whose opening quote is at ``body[pos]``. Strings are skipped
    with ``bytes.find`` (memchr speed), not a regex: a 16 MiB prompt is one string, and a
    regex would hold the GIL (and so the event loop) for the whole of it."""
    start = pos + 1
    while (quote := body.find(b'"', start)) >= 0:
        before = quote - 1
        while body[before] == _BACKSLASH:
            before -= 1
        if (quote - 1 - before) % 2 == 0:  # an even run of backslashes escapes nothing
            return quote + 1
        start = quote + 1
    raise ValueError(f"unterminated string at byte {pos}")


def _skip_ws(body: bytes, pos: int) -> int:
    return _match(_WS, body, pos)


def _match(pattern: re.Pattern[bytes], body: bytes, pos: int) -> int:
    found = pattern.match(body, pos)
    if found is None:
        raise ValueError(f"unexpected JSON at byte {pos}")
    return found.end()


def _expect(body: bytes, pos: int, char: int) -> None:
    if pos >= len(body) or body[pos] != char:
        raise ValueError(f"expected {chr(char)!r} at byte {pos}")
