"""What the clients suite shares: a rate-limited relay, a kill mid-stream, scripted prompts.

Every client meets the same three failures, each of which must surface as that client's own
normal error: a wrong key (401), a 429 from the broker's rate limit, and the connector killed
while a stream is flowing (the broker ends the stream with the API's error event).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from conftest import DEMO_MODEL, Relay, wait_models
from harness.stack import inprocess_broker, inprocess_connector
from harness.waits import wait_for
from remotellm_connector.demo_llm import DemoLLMConfig, DemoLLMServer, serve_demo_llm

__all__ = [
    "SLOW",
    "WRONG_KEY",
    "demo_reply",
    "kill_connector_mid_stream",
    "limited_relay",
]

WRONG_KEY = "sk-" + "0" * 40
SLOW: dict[str, Any] = {"x_tokens": 400, "x_gap_ms": 25}
"""Body fields for an answer that streams for ~10 s: long enough to kill the connector in it."""


def demo_reply(**reply: Any) -> str:
    """The inline marker that scripts the demo LLM's answer (see demo_llm.script)."""
    return f"[[demo-reply {json.dumps(reply)}]]"


@asynccontextmanager
async def limited_relay(workdir: Path) -> AsyncIterator[Relay]:
    """A relay whose key has spent its only request: the next one is the broker's 429."""
    overrides = {"rate_limit_rpm": 1, "rate_limit_burst": 1}
    async with (
        inprocess_broker(workdir, overrides=overrides) as broker,
        serve_demo_llm(DemoLLMConfig(models=(DEMO_MODEL,), tokens=4)) as llm,
    ):
        key = broker.add_user("carol")
        async with inprocess_connector(broker.relay_url, broker.connector_token(), llm.url) as c:
            relay = Relay(broker, c, key, llm.url)
            await wait_models(relay, {DEMO_MODEL})
            async with relay.async_client() as client:
                message = {"role": "user", "content": "spend the burst"}
                await client.chat.completions.create(model=DEMO_MODEL, messages=[message])
            yield relay


async def kill_connector_mid_stream(
    relay: Relay, llm: DemoLLMServer, *, after: float = 0.3
) -> None:
    """Once the LLM streams (a client in another process is reading it), kill the connector
    abruptly, as a second SIGTERM does: the broker must end the client's stream in error."""
    await wait_for(lambda: llm.stats.live_streams > 0, 60, what="the LLM to start streaming")
    await asyncio.sleep(after)  # a few tokens out at SLOW's cadence, far from its end
    assert llm.stats.live_streams > 0, "the stream ended before the kill: make it slower"
    await relay.connector.kill()
