"""The connector's default stream cap against the real llama.cpp ``llama-server``.

llama-server reports its slots (``--parallel``) in ``GET /props`` → ``total_slots``; a
connector started without ``max_streams`` takes 2 x that many streams, and the broker
routes by the cap the connector announced. (The fallback for servers that do not say is
tested with a scripted fake in the connector's test_capacity.py.)
"""

from __future__ import annotations

import pytest

from harness.stack import BrokerHandle, inprocess_connector
from llama import start_llama_server
from remotellm_broker.app import BROKER

pytestmark = pytest.mark.llama


@pytest.mark.parametrize(("explicit", "expected"), [(None, 6), (5, 5)], ids=["derived", "explicit"])
async def test_the_cap_is_twice_llamacpps_slots_unless_the_owner_sets_one(
    broker: BrokerHandle, explicit: int | None, expected: int
) -> None:
    with start_llama_server(parallel=3, ctx=1024) as server:
        settings = {} if explicit is None else {"max_streams": explicit}
        async with inprocess_connector(
            broker.relay_url, broker.connector_token(), server.base_url, **settings
        ) as connector:
            assert connector.connector.policy.max_streams == expected
            links = list(broker.bound.app[BROKER].registry)
            assert [link.max_streams for link in links] == [expected]
