"""Deterministic content: what the demo LLM answers, computable by any client.

Token ``k`` of a response is ``f"tok{k}-{tag} "``. The tag is ``s<seed>`` when the request has
an integer ``seed`` (the benchmark gives every stream its own seed), otherwise 8 hex digits of a
BLAKE2b hash of the JSON-encoded ``messages`` (chat), ``prompt`` (completions) or ``input``
(embeddings). A client that holds its request body can therefore check every token, its order,
and that no other stream's token leaked into its own.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from array import array
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

__all__ = [
    "embedding_vector",
    "encode_embedding",
    "expected_text",
    "expected_tokens",
    "expected_tool_arguments",
    "iter_tokens",
    "prompt_bytes",
    "prompt_token_count",
    "stream_tag",
    "tag_from",
    "token",
    "tool_argument_pieces",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


def _as_body(request_body: Mapping[str, Any] | bytes | str) -> Mapping[str, Any]:
    if isinstance(request_body, bytes | str):
        decoded = _decode(request_body)
        if not isinstance(decoded, dict):
            raise ValueError("request body must be a JSON object")
        return decoded
    return request_body


def _prompt_of(body: Mapping[str, Any]) -> object:
    for name in ("messages", "prompt", "input"):
        if name in body:
            return body[name]
    return None


def prompt_bytes(body: Mapping[str, Any]) -> bytes:
    """The JSON encoding of the prompt part of a request: the input to tag and usage."""
    return _encode(_prompt_of(body))


def stream_tag(request_body: Mapping[str, Any] | bytes | str) -> str:
    """The per-response tag that every token carries (see the module docstring)."""
    body = _as_body(request_body)
    seed = body.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return f"s{seed}"
    return tag_from(None, prompt_bytes(body))


def tag_from(seed: int | None, encoded_prompt: bytes) -> str:
    """The tag from values the server already holds (saves encoding the prompt twice)."""
    if seed is not None:
        return f"s{seed}"
    return hashlib.blake2b(encoded_prompt, digest_size=4).hexdigest()


def token(tag: str, k: int) -> str:
    return f"tok{k}-{tag} "


def expected_tokens(request_body: Mapping[str, Any] | bytes | str, n: int) -> list[str]:
    """The ``n`` content tokens a chat or completion request gets, in order."""
    tag = stream_tag(request_body)
    return [token(tag, k) for k in range(n)]


def expected_text(request_body: Mapping[str, Any] | bytes | str, n: int) -> str:
    """The whole answer text (the tokens joined), as a non-streaming response carries it."""
    return "".join(expected_tokens(request_body, n))


def iter_tokens(tag: str, n: int) -> Iterator[str]:
    """The tokens lazily: a 300 000-token stream should not hold them all in memory."""
    return (f"tok{k}-{tag} " for k in range(n))


def tool_argument_pieces(tag: str, n: int) -> Iterator[str]:
    """The ``arguments`` string of a tool call, split as it is streamed (n + 2 pieces)."""
    yield '{"text": "'
    yield from iter_tokens(tag, n)
    yield '"}'


def expected_tool_arguments(request_body: Mapping[str, Any] | bytes | str, n: int) -> str:
    """The complete ``function.arguments`` JSON string of the tool call for this request."""
    return "".join(tool_argument_pieces(stream_tag(request_body), n))


def prompt_token_count(encoded_prompt: bytes) -> int:
    """Usage's prompt_tokens: one token per 4 bytes of the encoded prompt, at least 1."""
    return max(1, (len(encoded_prompt) + 3) // 4)


def embedding_vector(item: object, dim: int) -> list[float]:
    """A unit-length vector derived from a BLAKE2b stream of the JSON-encoded input item."""
    seed = _encode(item)
    raw = bytearray()
    block = 0
    while len(raw) < 2 * dim:
        raw += hashlib.blake2b(seed, digest_size=64, salt=block.to_bytes(16, "little")).digest()
        block += 1
    values = [int.from_bytes(raw[2 * i : 2 * i + 2], "little") / 32767.5 - 1.0 for i in range(dim)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    """``"base64"`` is little-endian float32, what the openai SDK asks for by default."""
    if encoding_format == "base64":
        packed = array("f", vector)
        if sys.byteorder == "big":  # pragma: no cover - the wire format is little-endian
            packed.byteswap()
        return base64.b64encode(packed.tobytes()).decode("ascii")
    return vector
