"""Cancel reaches the LLM fast, and credit bounds what a stalled client can pile up."""

import asyncio
import time
from typing import Any

from broker_peer import BrokerPeer, error_code
from conftest import StartConnector
from remotellm_connector.demo_llm import DemoLLMServer, expected_text
from remotellm_protocol import DEFAULT_STREAM_WINDOW, ErrorCode
from test_relay import sse_text

CHAT: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
#: What the issue promises: the upstream sees the disconnect within this.
CANCEL_BUDGET_S = 0.5


async def cancel_and_time(demo: DemoLLMServer, cancel: Any) -> float:
    """Seconds from sending the cancel to the demo LLM noticing the disconnect."""
    before = len(demo.stats.disconnects)
    start = time.monotonic()
    await cancel()
    async with asyncio.timeout(5):
        await demo.stats.wait_until(lambda s: len(s.disconnects) > before)
    return demo.stats.disconnects[-1].at - start


async def test_cancel_mid_stream_reaches_the_llm_within_half_a_second(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    body = {**CHAT, "stream": True, "max_tokens": 10_000, "x_gap_ms": 20}
    stream = await conn.open(body=body)
    await stream.wait_bytes(1000)
    took = await cancel_and_time(demo, lambda: conn.cancel(stream))
    assert took < CANCEL_BUDGET_S
    end = await stream.wait_end()
    assert error_code(end) == ErrorCode.CANCELLED
    assert demo.stats.disconnects[-1].tokens_sent < 10_000


async def test_cancel_before_the_first_token_reaches_the_llm_within_half_a_second(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    stream = await conn.open(body={**CHAT, "stream": True, "x_ttft_ms": 30_000})
    await demo.stats.wait_until(lambda s: s.live_streams == 1)
    await asyncio.sleep(0.05)  # the connector is now waiting for the first token
    took = await cancel_and_time(demo, lambda: conn.cancel(stream))
    assert took < CANCEL_BUDGET_S
    end = await stream.wait_end()
    assert error_code(end) == ErrorCode.CANCELLED
    assert stream.received == 0


async def test_cancel_during_a_slow_non_streaming_answer_reaches_the_llm(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    stream = await conn.open(body={**CHAT, "x_ttft_ms": 30_000})
    await demo.stats.wait_until(lambda s: s.requests["/v1/chat/completions"] == 1)
    await asyncio.sleep(0.05)
    took = await cancel_and_time(demo, lambda: conn.cancel(stream))
    assert took < CANCEL_BUDGET_S
    end = await stream.wait_end()
    assert stream.head is None
    assert error_code(end) == ErrorCode.CANCELLED


async def test_stalled_reader_bounds_memory_and_other_streams_keep_flowing(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    # ~45 MB of SSE if nothing pushed back.
    huge = {**CHAT, "stream": True, "max_tokens": 300_000, "seed": 1}
    stalled = await conn.open(body=huge, auto_credit=False)
    await stalled.wait_bytes(DEFAULT_STREAM_WINDOW)
    await asyncio.sleep(0.3)
    assert stalled.received == DEFAULT_STREAM_WINDOW  # exactly the window, not a byte more
    # Another stream on the same socket is not held up by the stalled one.
    other = await conn.open(body={**CHAT, "stream": True, "seed": 2}, correlation_id="req-2")
    assert (await other.wait_end()).error is None
    assert stalled.end is None
    # The LLM itself was slowed down: it could only write what the buffers on the way hold.
    took = await asyncio.wait_for(_cancel(conn, stalled, demo), 5)
    assert took < CANCEL_BUDGET_S
    sent = demo.stats.disconnects[-1].tokens_sent
    assert sent < 300_000 / 4, f"upstream produced {sent} tokens for a stalled reader"


async def _cancel(conn: Any, stream: Any, demo: DemoLLMServer) -> float:
    return await cancel_and_time(demo, lambda: conn.cancel(stream))


async def test_credit_resumes_a_stalled_stream_to_its_exact_end(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    body = {**CHAT, "stream": True, "max_tokens": 5000}
    stream = await conn.open(body=body, auto_credit=False)
    await stream.wait_bytes(DEFAULT_STREAM_WINDOW)
    await asyncio.sleep(0.1)
    assert stream.received == DEFAULT_STREAM_WINDOW
    assert stream.end is None
    stream.auto_credit = True  # the client reads again
    await stream.credit(stream.received)
    end = await stream.wait_end()
    assert end.error is None
    assert sse_text(stream.sse_payloads()) == expected_text(body, 5000)
