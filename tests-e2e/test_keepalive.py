"""Keep-alive comments while the model thinks, so idle timeouts (Node's 300 s, CDNs' 100 s)
never kill a stream during a long prefill.

The default run uses a 1 s interval and a 3 s prefill; the literal case of the issue (a 40 s
prefill with the default 15 s interval) is marked slow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import DEMO_MODEL, Relay, wait_models
from harness.sse import RawResponse, post_raw
from harness.stack import inprocess_broker, inprocess_connector
from remotellm_connector.demo_llm import DemoLLMServer, expected_tokens


@asynccontextmanager
async def relay_with_keepalive(
    tmp_path: Path, demo_llm: DemoLLMServer, interval_s: float
) -> AsyncIterator[Relay]:
    async with inprocess_broker(tmp_path, overrides={"keepalive_interval_s": interval_s}) as b:
        key = b.add_user("patient")
        async with inprocess_connector(b.relay_url, b.connector_token(), demo_llm.url) as c:
            relay = Relay(b, c, key, demo_llm.url)
            await wait_models(relay, {DEMO_MODEL})
            yield relay


def body(ttft_ms: int, n: int = 4) -> dict[str, Any]:
    return {
        "model": DEMO_MODEL,
        "messages": [{"role": "user", "content": "think hard"}],
        "max_tokens": n,
        "stream": True,
        "x_ttft_ms": ttft_ms,
    }


def check_keepalives(response: RawResponse, request: dict[str, Any], interval_s: float) -> None:
    events = response.events
    first_data = next(i for i, e in enumerate(events) if e.comment is None)
    before = events[:first_data]
    assert len(before) >= 2, f"expected keep-alives before the first token, got {before}"
    assert all(e.comment == "keep-alive" for e in before)
    # The first keep-alive comes about one interval after the request, not at the end.
    first_comment_at = next(t for t, chunk in response.chunks if chunk.startswith(b":"))
    assert interval_s * 0.5 < first_comment_at < interval_s * 2
    text = [
        e.json["choices"][0]["delta"].get("content")
        for e in events[first_data:]
        if e.comment is None and e.data != "[DONE]" and e.json["choices"]
    ]
    assert [t for t in text if t] == expected_tokens(request, request["max_tokens"])
    assert events[-1].data == "[DONE]"


async def test_keepalive_comments_flow_during_a_long_prefill(
    tmp_path: Path, demo_llm: DemoLLMServer
) -> None:
    async with relay_with_keepalive(tmp_path, demo_llm, interval_s=1.0) as relay:
        request = body(ttft_ms=3000)
        response = await post_raw(f"{relay.api_url}/chat/completions", relay.key, request)
        assert response.status == 200
        check_keepalives(response, request, interval_s=1.0)
        # The SDK skips the comments and gets the same answer.
        async with relay.async_client() as client:
            sdk_body = {k: v for k, v in request.items() if not k.startswith("x_")}
            stream = await client.chat.completions.create(
                **sdk_body, extra_body={"x_ttft_ms": 1200}
            )
            pieces = [c.choices[0].delta.content async for c in stream if c.choices]
        assert [p for p in pieces if p] == expected_tokens(request, 4)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_keepalive_comments_flow_during_a_40_s_prefill_at_the_default_15_s(
    tmp_path: Path, demo_llm: DemoLLMServer
) -> None:
    async with relay_with_keepalive(tmp_path, demo_llm, interval_s=15.0) as relay:
        request = body(ttft_ms=40_000)
        response = await post_raw(
            f"{relay.api_url}/chat/completions", relay.key, request, within=90
        )
        assert response.status == 200
        check_keepalives(response, request, interval_s=15.0)
