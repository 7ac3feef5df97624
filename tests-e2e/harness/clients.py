"""Small client-side helpers shared by the tests that drive the openai SDK."""

from __future__ import annotations

from typing import Any

import openai

__all__ = ["available_models", "collect"]


async def collect(
    client: openai.AsyncOpenAI, body: dict[str, Any], progress: dict[int, int] | None = None
) -> list[str]:
    """The content tokens of a streamed chat answer, in order.

    ``progress[body["seed"]]`` counts them as they arrive, so a test can wait until every
    stream is past its first token before it breaks something.
    """
    tokens: list[str] = []
    stream = await client.chat.completions.create(**body)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            tokens.append(chunk.choices[0].delta.content)
            if progress is not None:
                progress[body["seed"]] = len(tokens)
    return tokens


async def available_models(client: openai.AsyncOpenAI) -> set[str]:
    """The ids the broker lists as available now (recently served models stay listed with
    ``"available": false`` for the broker's model memory)."""
    return {
        m.id
        async for m in client.models.list()
        if (m.model_extra or {}).get("available", True) is not False
    }
