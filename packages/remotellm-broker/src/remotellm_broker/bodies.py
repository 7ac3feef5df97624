"""Validation of API request bodies, before anything is relayed.

The broker forwards the client's bytes unchanged, so it only needs to know the ``model`` and
whether the client wants a stream; but it checks the few fields every OpenAI-compatible
server requires, so that malformed input gets a precise 400 here instead of an unpredictable
answer from some model server. Anything else (sampling parameters, tools, ...) is the model
server's business.

A body may be 16 MiB, so validating it must not build it: each decoder names only the fields
it checks, msgspec skips the rest without allocating, and the big fields (``messages``,
``prompt``, ``input``) are decoded as ``msgspec.Raw`` — a view of their bytes, checked for
their JSON kind by the first byte. Decoding still reads every byte, so malformed JSON anywhere
in the body is refused. A whole 16 MiB body costs a few hundred bytes and a few milliseconds.
UTF-8 is checked while the body is read (``intake``).

Every way a body can be wrong — not JSON, not an object, nested thousands deep, a field of the
wrong type — ends as ``OpenAIError(400)`` naming the offending parameter.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from remotellm_broker.openai_errors import OpenAIError

__all__ = ["ParsedBody", "parse_body"]

_ModelId = Annotated[str, msgspec.Meta(min_length=1)]
_EMPTY_ARRAY = re.compile(rb"\[[ \t\r\n]*\]")
_NULL = msgspec.Raw(b"null")


class ParsedBody(msgspec.Struct, frozen=True):
    model: str
    stream: bool
    #: The Responses API's ``previous_response_id`` (None elsewhere).
    previous_response_id: str | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _Chat(msgspec.Struct):
    model: _ModelId
    messages: msgspec.Raw  # a non-empty array (checked in ``_check_kinds``)
    stream: bool | None = None
    stream_options: _StreamOptions | None = None


class _Completion(msgspec.Struct):
    model: _ModelId
    prompt: msgspec.Raw = _NULL  # a string, an array or null
    stream: bool | None = None
    stream_options: _StreamOptions | None = None


class _Embedding(msgspec.Struct):
    model: _ModelId
    input: msgspec.Raw  # a string or an array


class _Response(msgspec.Struct):
    """OpenAI Responses API (``input`` may be absent when ``previous_response_id`` or a
    stored prompt supplies it: the model server decides)."""

    model: _ModelId
    input: msgspec.Raw = _NULL  # a string, an array or null
    stream: bool | None = None
    previous_response_id: str | None = None


class _Message(msgspec.Struct):
    """Anthropic Messages API, and its ``count_tokens`` (which has no ``stream``)."""

    model: _ModelId
    messages: msgspec.Raw  # a non-empty array (checked in ``_check_kinds``)
    stream: bool | None = None


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "/v1/chat/completions": msgspec.json.Decoder(_Chat),
    "/v1/completions": msgspec.json.Decoder(_Completion),
    "/v1/embeddings": msgspec.json.Decoder(_Embedding),
    "/v1/responses": msgspec.json.Decoder(_Response),
    "/v1/messages": msgspec.json.Decoder(_Message),
    "/v1/messages/count_tokens": msgspec.json.Decoder(_Message),
}
_NOT_STREAMED = (_Embedding,)

#: The JSON kinds each raw field may hold, by its first byte (``msgspec.Raw`` spans the
#: value exactly, no surrounding whitespace).
_KINDS: dict[type, tuple[str, bytes, str]] = {
    _Chat: ("messages", b"[", "an array of messages"),
    _Completion: ("prompt", b'"[n', "a string or an array"),
    _Embedding: ("input", b'"[', "a string or an array"),
    _Response: ("input", b'"[n', "a string or an array"),
    _Message: ("messages", b"[", "an array of messages"),
}


def parse_body(path: str, body: bytes) -> ParsedBody:
    """The model and stream flag of a request body for ``path``; ``OpenAIError`` if bad.

    ``body`` must already be known to be UTF-8 (``intake.read_body`` checks it).
    """
    if not body:
        raise _invalid("The request body is empty; send a JSON object.")
    try:
        parsed = _DECODERS[path].decode(body)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from None
    except msgspec.DecodeError:
        raise _invalid(
            "We could not parse the JSON body of your request. The body must be a JSON object."
        ) from None
    except RecursionError:
        raise _invalid("The JSON body is nested too deeply.") from None
    _check_kinds(parsed)
    stream = bool(getattr(parsed, "stream", False))
    streamed = path != "/v1/messages/count_tokens" and not isinstance(parsed, _NOT_STREAMED)
    previous = parsed.previous_response_id if isinstance(parsed, _Response) else None
    return ParsedBody(model=parsed.model, stream=stream and streamed, previous_response_id=previous)


def _check_kinds(parsed: object) -> None:
    name, firsts, expected = _KINDS[type(parsed)]
    view = memoryview(getattr(parsed, name))
    if view[:1] not in [firsts[i : i + 1] for i in range(len(firsts))]:
        raise _invalid(f"Invalid type for '{name}': expected {expected}.", name)
    if isinstance(parsed, _Chat | _Message) and _EMPTY_ARRAY.fullmatch(view):
        raise _invalid(f"Invalid '{name}': empty array; expected at least one item.", name)


def _invalid(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, code="invalid_request", param=param)


def _validation_error(detail: str) -> OpenAIError:
    """Turn msgspec's "Expected `str`, got `int` - at `$.model`" into an OpenAI 400."""
    param: str | None = None
    if "- at `$." in detail:
        detail, _, where = detail.rpartition(" - at `$.")
        param = where.rstrip("`")
    elif detail.startswith("Object missing required field `"):
        param = detail.split("`")[1]
        return _invalid(f"Missing required parameter: '{param}'.", param)
    elif detail.startswith("Expected `object`"):
        return _invalid("The request body must be a JSON object.")
    if detail.startswith("Expected `array` of length >= 1"):
        return _invalid(f"Invalid '{param}': empty array; expected at least one item.", param)
    shown = detail.replace("`", "'")
    return _invalid(f"Invalid type for '{param}': {shown}." if param else f"{shown}.", param)
