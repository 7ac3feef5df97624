"""The relay's life: killed, refused, replaced, drained, fed garbage — and the daemon goes on."""

import asyncio
import time
from typing import Any

import aiohttp

from broker_peer import BrokerPeer, error_code
from conftest import StartConnector
from remotellm_connector.demo_llm import DemoLLMServer
from remotellm_connector.link import CLOSE_TIMEOUT_S
from remotellm_protocol import CloseCode, Credit, ErrorCode, GoAway, encode

CHAT: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
SLOW_STREAM: dict[str, Any] = {**CHAT, "stream": True, "max_tokens": 10_000, "x_gap_ms": 20}


async def assert_serves(peer: BrokerPeer) -> None:
    """A fresh connection from the connector arrives and answers a request."""
    conn = await peer.next_connection()
    stream = await conn.open(body=CHAT)
    assert (await stream.wait_end()).error is None


async def test_relay_killed_mid_stream_aborts_the_upstream_and_reconnects(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    stream = await conn.open(body=SLOW_STREAM)
    await stream.wait_bytes(500)
    killed = time.monotonic()
    conn.kill()
    async with asyncio.timeout(5):
        await demo.stats.wait_until(lambda s: len(s.disconnects) == 1)
    assert demo.stats.disconnects[0].at - killed < 0.5
    await assert_serves(peer)


async def test_broker_goaway_and_close_is_a_planned_restart_with_a_quick_return(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector()
    conn = await peer.next_connection()
    await conn.send_goaway()
    await conn.close(CloseCode.GOING_AWAY)
    closed = time.monotonic()
    await assert_serves(peer)
    assert time.monotonic() - closed < running.connector.backoff.base + 1.0
    assert running.connector.backoff.attempts == 0


async def test_streams_in_flight_finish_after_the_broker_goaway(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    stream = await conn.open(body={**CHAT, "stream": True, "max_tokens": 20, "x_gap_ms": 10})
    await stream.wait_bytes(1)
    await conn.send_goaway()
    end = await stream.wait_end()
    assert end.error is None
    assert stream.sse_payloads()[-1] == "[DONE]"


async def test_after_a_broker_goaway_the_connector_dials_again_while_old_streams_finish(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    """A restarting broker drains on the old link; the new process gets the connector at once."""
    await start_connector()
    old = await peer.next_connection()
    stream = await old.open(body={**CHAT, "stream": True, "max_tokens": 100, "x_gap_ms": 20})
    await stream.wait_bytes(1)
    await old.send_goaway()
    sent = time.monotonic()
    new = await peer.next_connection(within=3.0)
    assert time.monotonic() - sent < 1.5  # not after the old stream's 2 s
    assert stream.end is None
    fresh = await new.open(body=CHAT)  # new requests are served on the new link meanwhile
    assert (await fresh.wait_end()).error is None
    end = await stream.wait_end()  # and the old stream finishes, whole, on the old one
    assert end.error is None
    assert stream.sse_payloads()[-1] == "[DONE]"


async def test_garbage_from_the_broker_closes_the_link_and_the_connector_reconnects(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector()
    conn = await peer.next_connection()
    await conn.send_raw(b"\xc1 not msgpack")
    await conn.wait_closed()
    assert conn.ws.close_code == CloseCode.PROTOCOL_ERROR
    await assert_serves(peer)
    assert not running.task.done()


async def test_a_frame_out_of_order_closes_the_link_and_the_connector_reconnects(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    await conn.send_raw(encode(Credit(stream=99, delivered=0)))  # no such stream
    await conn.wait_closed()
    assert conn.ws.close_code == CloseCode.PROTOCOL_ERROR
    await assert_serves(peer)


async def test_a_text_message_closes_the_link_and_the_connector_reconnects(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    await start_connector()
    conn = await peer.next_connection()
    await conn.ws.send_str("hello?")
    await conn.wait_closed()
    await assert_serves(peer)


async def test_graceful_stop_sends_goaway_lets_the_stream_finish_and_exits_zero(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector()
    conn = await peer.next_connection()
    stream = await conn.open(body={**CHAT, "stream": True, "max_tokens": 30, "x_gap_ms": 10})
    await stream.wait_bytes(1)
    running.connector.request_stop()
    await conn.wait_until(lambda: conn.goaway is not None)
    assert running.connector.status.problems() != []  # not ready while draining
    end = await stream.wait_end()
    assert end.error is None
    assert stream.sse_payloads()[-1] == "[DONE]"
    assert await running.stop() == 0
    await conn.wait_closed()
    assert conn.ws.close_code == CloseCode.GOING_AWAY
    assert len(peer.connections) == 1  # no reconnect after a stop


async def test_second_stop_ends_streams_with_an_error_and_exits_one(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    running = await start_connector()
    conn = await peer.next_connection()
    stream = await conn.open(body=SLOW_STREAM)
    await stream.wait_bytes(1)
    running.connector.request_stop()
    running.connector.request_stop()
    end = await stream.wait_end()
    assert error_code(end) == ErrorCode.UPSTREAM_INTERRUPTED
    assert await running.stop() == 1
    async with asyncio.timeout(5):
        await demo.stats.wait_until(lambda s: len(s.disconnects) == 1)


async def test_drain_grace_expiry_ends_the_stream_with_an_error(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector(shutdown_grace_s=0.2)
    conn = await peer.next_connection()
    stream = await conn.open(body=SLOW_STREAM)
    await stream.wait_bytes(1)
    running.connector.request_stop()
    end = await stream.wait_end()
    assert error_code(end) == ErrorCode.UPSTREAM_INTERRUPTED
    assert await running.stop() == 0


async def test_refused_token_counts_failures_raises_the_alert_and_max_retries_exits_one(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    peer.token = "another-token"
    running = await start_connector(max_retries=5)
    running.connector.backoff.base = running.connector.backoff.cap = 0.01
    async with asyncio.timeout(10):
        code = await running.task
    assert code == 1
    assert peer.attempts == 6
    assert running.connector.status.alerting
    metrics = running.connector.metrics.render().decode()
    assert "remotellm_connector_connect_failures_total 6.0" in metrics
    assert "remotellm_connector_alerting 1.0" in metrics


async def test_health_endpoints_follow_the_relay(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector()
    conn = await peer.next_connection()
    health = running.connector.health
    assert health is not None
    base = f"http://127.0.0.1:{health.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(base + "/readyz") as resp:
            assert resp.status == 200, await resp.text()
        stream = await conn.open(body=CHAT)
        await stream.wait_end()
        async with http.get(base + "/metrics") as resp:
            text = await resp.text()
        assert 'remotellm_connector_requests_total{model="demo",outcome="ok"} 1.0' in text
        assert "remotellm_connector_relay_connected 1.0" in text
        peer.refuse_status = 503
        conn.kill()
        async with asyncio.timeout(5):
            while True:
                async with http.get(base + "/readyz") as resp:
                    if resp.status == 503:
                        assert "relay to the broker is down" in (await resp.json())["problems"]
                        break
                await asyncio.sleep(0.02)


async def test_goaway_frame_from_connector_is_well_formed(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector()
    conn = await peer.next_connection()
    running.connector.request_stop()
    await conn.wait_closed()
    assert isinstance(conn.goaway, GoAway)
    assert conn.errors == []


async def test_a_silent_broker_is_noticed_by_ping_timeout_and_redialled(
    peer: BrokerPeer, start_connector: StartConnector
) -> None:
    # Defaults: 5 s ping period + 7 s pong deadline + 2 s close timeout = 14 s; ping scaled down.
    await start_connector(ping_interval_s=0.2, ping_timeout_s=0.3)
    conn = await peer.next_connection()
    transport = conn.request.transport
    assert transport is not None
    transport.pause_reading()  # the broker hangs: no pong, no close, no RST
    silent = time.monotonic()
    await assert_serves(peer)
    # ping period, pong deadline, close timeout, first reconnect delay, slack
    assert time.monotonic() - silent < 0.2 + 0.3 + CLOSE_TIMEOUT_S + 1.0 + 1.0
