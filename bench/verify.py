"""After the run: turn each raw exchange into timings, and prove it exact.

Exact means the stream carried exactly its own tokens, in order, ending in ``[DONE]`` — the
demo LLM's tokens name the request's seed (``expected_tokens``), so a token that leaked from
another stream, a lost one or a duplicate is caught. Nothing here runs while load is applied.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import msgspec

from bench.httpclient import Exchange
from remotellm_connector.demo_llm import expected_tokens

__all__ = ["Outcome", "percentile", "verify_json", "verify_stream"]

_decode = msgspec.json.decode


@dataclass(slots=True)
class Outcome:
    """What one request measured; ``error`` is None only for an exact, complete answer."""

    error: str | None
    sent_at: float
    done_at: float
    bytes_out: int
    bytes_in: int
    tokens: int = 0
    reads: int = 0
    """Socket reads that brought body bytes: below ``tokens``, something coalesced them."""
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    max_silence: float = 0.0
    """The longest time without any byte (headers, comments, data) before the first token."""


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (q in 0..100)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _base(ex: Exchange, body: bytes) -> Outcome:
    outcome = Outcome(ex.error, ex.sent_at, ex.done_at or ex.sent_at, ex.request_bytes, len(body))
    outcome.reads = len(ex.mark_t)
    return outcome


def _refused(ex: Exchange, body: bytes, outcome: Outcome) -> bool:
    if outcome.error is None and ex.status != 200:
        snippet = body[:120].decode("utf-8", "replace")
        outcome.error = f"status {ex.status}: {snippet}"
    return outcome.error is not None


def verify_stream(ex: Exchange, seed: int, n_tokens: int) -> Outcome:
    """Check a streaming chat completion and time each token by the read that completed it."""
    body, segments = ex.body()
    outcome = _base(ex, body)
    if _refused(ex, body, outcome):
        return outcome
    texts: list[str] = []
    times: list[float] = []
    done = False
    start = 0
    while (end := body.find(b"\n\n", start)) >= 0:
        event, start = body[start:end], end + 2
        if not event.startswith(b"data:"):
            continue  # a ": keep-alive" comment, or a blank line
        payload = event[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue
        chunk = _decode(payload)
        if "error" in chunk:
            outcome.error = f"sse error event: {chunk['error']}"
            return outcome
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                texts.append(text)
                times.append(ex.arrival(end + 2, segments))
    outcome.tokens = len(texts)
    if texts != expected_tokens({"seed": seed}, n_tokens):
        outcome.error = f"inexact: {len(texts)}/{n_tokens} tokens, not its own or out of order"
    elif not done:
        outcome.error = "no [DONE]"
    if times:
        outcome.ttft = times[0] - ex.sent_at
        outcome.gaps = [b - a for a, b in itertools.pairwise(times)]
        heard = [ex.sent_at, ex.head_at, *(t for t in ex.mark_t if t <= times[0])]
        heard.sort()
        outcome.max_silence = max(b - a for a, b in itertools.pairwise(heard))
    return outcome


def verify_json(ex: Exchange, seed: int, response_bytes: int) -> Outcome:
    """Check a non-streaming answer padded to ``response_bytes`` with its own tokens."""
    body, _ = ex.body()
    outcome = _base(ex, body)
    if _refused(ex, body, outcome):
        return outcome
    content = _decode(body)["choices"][0]["message"]["content"]
    pattern = "".join(expected_tokens({"seed": seed}, 64))
    whole = pattern * (len(content) // len(pattern) + 1)
    if len(body) != response_bytes:
        outcome.error = f"body of {len(body)} bytes, expected {response_bytes}"
    elif content != whole[: len(content)]:
        outcome.error = "inexact: body content is not this request's tokens"
    else:
        outcome.tokens = 1
        outcome.ttft = ex.done_at - ex.sent_at
    return outcome
