"""The official openai npm package, the library Cline uses, with Cline's request shape.

``node/cline_client.mjs`` sends what Cline sends (stream, include_usage, temperature 0, tools,
a 40 KB system prompt) and reports what it got; the demo LLM's answer is a known function of
the request, so content and tool-call arguments are checked exactly.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import DEMO_MODEL, Relay
from harness.node import run_cline
from harness.waits import wait_for
from remotellm_connector.demo_llm import (
    DemoLLMServer,
    expected_text,
    expected_tokens,
    expected_tool_arguments,
)
from remotellm_connector.demo_llm.content import prompt_bytes, prompt_token_count

pytestmark = pytest.mark.node

TOKENS = 8  # the demo_llm fixture's tokens per answer when max_tokens is not set (Cline's way)
# npm ci runs once, before the tests (conftest.pytest_collection_finish).


def options(relay: Relay, **extra: Any) -> dict[str, Any]:
    return {"baseURL": relay.api_url, "apiKey": relay.key, "model": DEMO_MODEL, **extra}


async def test_a_cline_request_streams_the_exact_answer_with_usage(relay: Relay) -> None:
    report = await run_cline(options(relay))
    assert report["ok"], report["error"]
    sent = report["request"]
    assert report["requestBytes"] > 40_000
    assert report["contentDeltas"] == expected_tokens(sent, TOKENS)
    assert report["content"] == expected_text(sent, TOKENS)
    assert report["finishReason"] == "stop"
    prompt = prompt_token_count(prompt_bytes(sent))
    assert report["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": TOKENS,
        "total_tokens": prompt + TOKENS,
    }
    assert len(report["ids"]) == 1


async def test_a_cline_tool_call_arrives_whole(relay: Relay) -> None:
    report = await run_cline(options(relay, tools=True))
    assert report["ok"], report["error"]
    assert report["finishReason"] == "tool_calls"
    call = report["toolCalls"]["0"]
    assert call["name"] == "read_file"
    assert call["arguments"] == expected_tool_arguments(report["request"], TOKENS)
    assert report["usage"]["completion_tokens"] == TOKENS


async def test_a_bad_key_is_a_401_for_the_node_client(relay: Relay) -> None:
    report = await run_cline({**options(relay), "apiKey": "sk-" + "f" * 32})
    assert not report["ok"]
    assert report["error"]["status"] == 401


async def test_a_broken_stream_is_an_error_for_the_node_client(relay: Relay) -> None:
    report = await run_cline(options(relay, extra={"x_fail_after": 3}))
    assert not report["ok"], "a truncated answer must not look complete to Cline"
    assert report["error"] is not None
    assert report["contentDeltas"] == expected_tokens(report["request"], TOKENS)[:3]


async def test_cline_hanging_up_stops_the_llm(relay: Relay, demo_llm: DemoLLMServer) -> None:
    extra = {"max_tokens": 1000, "x_gap_ms": 20}
    report = await run_cline(options(relay, extra=extra, abortAfterChunks=5))
    assert report["aborted"]
    await wait_for(lambda: demo_llm.stats.disconnects, 2, what="the LLM to see the abort")
    assert demo_llm.stats.disconnects[0].tokens_sent < 100
