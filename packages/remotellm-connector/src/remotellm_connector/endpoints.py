"""Which API endpoints the local LLM server answers, found by probing it.

llama.cpp's ``llama-server`` and vLLM route the OpenAI Responses API and the Anthropic Messages
API next to chat completions, Ollama serves ``/v1/responses`` since 0.13.3 and an Anthropic
API, LM Studio and older builds do not. The connector announces what it found per model
(``ModelInfo.endpoints``), so the broker sends a Responses or Messages request only where it
can be served.

The probe must never start a generation: it sends ``POST <path>`` with the body ``{}`` (no
model, no input, no messages), which a server that routes the path rejects while parsing —
400 or 422 from a validator, 500 from a parser that throws (llama-server) — and a server that
does not route it answers 404 (405 if it knows the path for another method; LM Studio answers
200 with an "Unexpected endpoint" error). Anything but 400/415/422/500, a timeout or a refused
connection counts as "not supported": a 401/403/503 says nothing about the route, and the next
model refresh probes again.
"""

import asyncio
from typing import Final

import aiohttp

__all__ = ["BASELINE", "PROBED", "probe_endpoints", "supports"]

#: What every OpenAI-compatible server answers (never probed: they are the contract).
BASELINE: Final = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
#: What is probed, in the order announced.
PROBED: Final = ("/v1/responses", "/v1/messages", "/v1/messages/count_tokens")
#: The statuses of a server that routes the path and refused the empty body.
_ROUTED: Final = frozenset({400, 415, 422, 500})
#: Bytes of a probe's answer read (and thrown away) so the connection can be reused.
_ANSWER_LIMIT: Final = 64 * 1024


def supports(status: int) -> bool:
    """Whether a probe answered with ``status`` shows the path is routed."""
    return status in _ROUTED


async def _probe(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], wait_s: float
) -> bool:
    try:
        async with session.post(
            url,
            data=b"{}",
            headers={**headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=wait_s),
        ) as resp:
            await resp.content.read(_ANSWER_LIMIT)
            return supports(resp.status)
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


async def probe_endpoints(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str], wait_s: float
) -> list[str]:
    """The endpoints ``base_url`` serves: ``BASELINE`` and each of ``PROBED`` it routes."""
    answers = await asyncio.gather(
        *(_probe(session, base_url + path, headers, wait_s) for path in PROBED)
    )
    return [*BASELINE, *(path for path, ok in zip(PROBED, answers, strict=True) if ok)]
