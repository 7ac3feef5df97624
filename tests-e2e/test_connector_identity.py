"""A connector token is one identity, with the real connector (issue 11 item 2).

The broker-side rules are proven against a hostile peer in the broker's own tests; here the
real ``remotellm-connector`` meets them: an owner's connector keeps its name against a second
machine with another token, and a revoked token's connector is shut out at once.
"""

from __future__ import annotations

import asyncio
import io

from conftest import DEMO_MODEL, Relay, wait_models
from harness.stack import BrokerHandle, inprocess_connector
from harness.waits import wait_for
from remotellm_broker.app import BROKER
from remotellm_connector.check import run_check
from remotellm_connector.config import load_settings
from remotellm_connector.demo_llm import DemoLLMConfig, serve_demo_llm


def _session_of(broker: BrokerHandle, name: str) -> str:
    [link] = [c for c in broker.bound.app[BROKER].registry if c.name == name]
    return link.session_id


async def test_a_connector_with_another_token_cannot_take_over_a_connector_name(
    broker: BrokerHandle,
) -> None:
    key = broker.add_user("ann")
    async with serve_demo_llm(DemoLLMConfig(models=(DEMO_MODEL,))) as llm:
        owner_token = broker.connector_token("gpu-box")
        async with inprocess_connector(broker.relay_url, owner_token, llm.url) as owner:
            relay = Relay(broker, owner, key, llm.url)
            await wait_models(relay, {DEMO_MODEL})
            before = _session_of(broker, "gpu-box")
            async with inprocess_connector(
                broker.relay_url,
                broker.connector_token("intruder"),
                llm.url,
                wait=False,
                max_retries=1,
            ) as intruder:
                # Refused at every attempt (close code 4002), so it gives up.
                assert await asyncio.wait_for(asyncio.shield(intruder.task), 30) == 1
                assert not intruder.relay_up
            assert owner.relay_up
            assert _session_of(broker, "gpu-box") == before  # never replaced
            async with relay.async_client() as client:
                answer = await client.chat.completions.create(
                    model=DEMO_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
                )
            assert answer.choices[0].message.content


async def test_revoking_a_token_shuts_its_real_connector_out(broker: BrokerHandle) -> None:
    key = broker.add_user("bea")
    async with serve_demo_llm(DemoLLMConfig(models=(DEMO_MODEL,))) as llm:
        token = broker.connector_token("lab")
        async with inprocess_connector(broker.relay_url, token, llm.url, name="lab") as lab:
            relay = Relay(broker, lab, key, llm.url)
            await wait_models(relay, {DEMO_MODEL})
            broker.store.revoke_connector_token("lab")
            await wait_for(lambda: not lab.relay_up, 2.0, what="the revoked link to close")
            await wait_models(relay, set())


async def test_check_before_and_during_run_with_the_real_broker(broker: BrokerHandle) -> None:
    """The owner's path in the quickstart: `check`, then `run`, then `check` again. The check's
    probe hello (`<name>-check`, no models) once bound the token to that name, so `run` was
    refused with 4002 and every later check failed."""
    key = broker.add_user("cid")
    async with serve_demo_llm(DemoLLMConfig(models=(DEMO_MODEL,))) as llm:
        token = broker.connector_token("lab-token")
        settings = load_settings(
            None,
            {"REMOTELLM_CONNECTOR_TOKEN": token},
            {"broker_url": broker.relay_url, "llm_url": llm.url, "name": "gpu", "health_port": 0},
        )
        before = io.StringIO()
        assert await run_check(settings, out=before) == 0, before.getvalue()
        async with inprocess_connector(broker.relay_url, token, llm.url, name="gpu") as gpu:
            await wait_models(Relay(broker, gpu, key, llm.url), {DEMO_MODEL})
            during = io.StringIO()
            assert await run_check(settings, out=during) == 0, during.getvalue()
            assert gpu.relay_up
