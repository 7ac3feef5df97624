"""Graceful shutdown: readiness false at once, no new work, goaway to connectors, in-flight
streams finish (or end with an error at the timeout), connectors closed with 1001."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from broker_rig import assert_openai_error, read_sse, running_broker, wait_for
from connector_peer import serve_sse, stall
from remotellm_protocol import CloseCode

STREAM = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


async def test_shutdown_drains_in_flight_streams_then_closes_connectors(tmp_path: Path) -> None:
    async with running_broker(tmp_path, shutdown_timeout=5.0) as rig:
        peer = await rig.peer(script=serve_sse(15, gap=0.04))

        async def stream() -> list[str]:
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
            ) as resp:
                return await read_sse(resp)

        in_flight = asyncio.create_task(stream())
        await wait_for(lambda: len(peer.opens) == 1)
        rig.stop.set()
        await wait_for(lambda: not rig.state.ready, within=1)
        async with aiohttp.ClientSession() as http, http.get(rig.health_url + "/readyz") as resp:
            assert resp.status == 503
        await wait_for(lambda: bool(peer.goaways), within=1)
        # no new connections are accepted while draining
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(rig.url + "/v1/models", headers=rig.auth) as resp,
            ):
                refused = resp.status == 503
        except aiohttp.ClientConnectionError:
            refused = True
        assert refused
        lines = await in_flight
        assert lines[-1] == "data: [DONE]"
        assert len([line for line in lines if line.startswith('data: {"id"')]) == 15
        await asyncio.wait_for(rig.task, 10)
        await wait_for(lambda: peer.close_code is not None)
        assert peer.close_code == CloseCode.GOING_AWAY


async def test_streams_still_running_at_the_timeout_end_with_an_error(tmp_path: Path) -> None:
    async with running_broker(tmp_path, shutdown_timeout=0.3, keepalive_interval_s=0.1) as rig:
        peer = await rig.peer(script=stall)

        async def stream() -> list[str]:
            async with rig.http.post(
                rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth
            ) as resp:
                return await read_sse(resp)

        in_flight = asyncio.create_task(stream())
        await wait_for(lambda: len(peer.opens) == 1)
        started = time.monotonic()
        rig.stop.set()
        lines = await asyncio.wait_for(in_flight, 5)
        assert lines[-2] == "event: error"
        assert_openai_error(json.loads(lines[-1].removeprefix("data: ")), "server_shutting_down")
        await asyncio.wait_for(rig.task, 10)
        assert time.monotonic() - started < 4


async def test_a_connector_dialling_in_during_shutdown_is_refused(tmp_path: Path) -> None:
    async with running_broker(tmp_path, shutdown_timeout=1.0) as rig:
        await rig.peer(name="busy", script=stall)
        holder = asyncio.create_task(
            rig.http.post(rig.url + "/v1/chat/completions", json=STREAM, headers=rig.auth)
        )
        await wait_for(lambda: rig.state.in_flight == 1)
        rig.state.begin_shutdown()
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(
                    rig.relay_url,
                    headers={"Authorization": f"Bearer {rig.token}"},
                    protocols=("remotellm.v1",),
                )
            assert refused.value.status == 503
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
