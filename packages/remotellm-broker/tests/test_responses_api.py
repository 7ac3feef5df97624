"""The OpenAI Responses API (``/v1/responses``) through the broker, driven by the real
``openai`` SDK and by raw HTTP where the bytes matter."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import openai
import pytest

from broker_rig import Rig, assert_openai_error, read_sse, running_broker, wait_for
from connector_peer import stall
from surface_scripts import (
    ALL_ENDPOINTS,
    RESPONSE_EVENTS,
    RESPONSE_JSON,
    answer_json,
    stream_events,
)

REQUEST = {"model": "m", "input": "hi"}


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path, keepalive_interval_s=0.1) as rig:
        yield rig


async def test_the_openai_sdk_streams_named_events_through_keep_alives(rig: Rig) -> None:
    peer = await rig.peer(
        endpoints=ALL_ENDPOINTS, script=stream_events(RESPONSE_EVENTS, prefill=0.35)
    )
    stream = await rig.client().responses.create(model="m", input="hi", stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.completed",
    ]
    assert events[-1].response.usage.output_tokens == 2  # type: ignore[union-attr]
    assert peer.opens[0].path == "/v1/responses"


async def test_stream_bytes_pass_unchanged_and_unbuffered(rig: Rig) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS, script=stream_events(RESPONSE_EVENTS, gap=0.3))
    arrivals: list[tuple[float, bytes]] = []
    async with rig.http.post(
        rig.url + "/v1/responses", json={**REQUEST, "stream": True}, headers=rig.auth
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        async for chunk in resp.content.iter_any():
            arrivals.append((time.monotonic(), chunk))
    body = b"".join(chunk for _, chunk in arrivals)
    body = body.replace(b": keep-alive\n\n", b"")
    assert body == b"".join(RESPONSE_EVENTS)
    # each event came on its own, about 0.3 s after the one before: nothing was held back
    first_delta = next(t for t, c in arrivals if b"output_text.delta" in c)
    completed = next(t for t, c in arrivals if b"response.completed" in c)
    assert completed - first_delta > 0.4


async def test_a_stateless_response_and_a_previous_response_id_are_relayed_as_sent(
    rig: Rig,
) -> None:
    peer = await rig.peer(endpoints=ALL_ENDPOINTS, script=answer_json(RESPONSE_JSON))
    client = rig.client()
    first = await client.responses.create(model="m", input="hi", store=False)
    await client.responses.create(model="m", input="more", previous_response_id=first.id)
    assert first.output_text == "Hi there"
    assert json.loads(peer.opens[0].body)["store"] is False
    assert json.loads(peer.opens[1].body)["previous_response_id"] == "resp_abc123"


async def test_the_upstreams_own_refusal_keeps_its_status_and_body(rig: Rig) -> None:
    refusal = json.dumps(
        {
            "error": {
                "message": "previous response not found",
                "type": "invalid_request_error",
                "param": "previous_response_id",
                "code": "previous_response_not_found",
            }
        }
    ).encode()
    await rig.peer(endpoints=ALL_ENDPOINTS, script=answer_json(refusal, status=404))
    with pytest.raises(openai.NotFoundError) as caught:
        await rig.client().responses.create(model="m", input="x", previous_response_id="resp_x")
    assert caught.value.code == "previous_response_not_found"


async def test_a_failure_mid_stream_is_a_responses_error_event_and_no_completed(
    rig: Rig,
) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS, script=stream_events(RESPONSE_EVENTS, fail_after=2))
    async with rig.http.post(
        rig.url + "/v1/responses", json={**REQUEST, "stream": True}, headers=rig.auth
    ) as resp:
        lines = await read_sse(resp)
    assert not any("response.completed" in line for line in lines)
    assert lines[-2] == "event: error"
    event = json.loads(lines[-1].removeprefix("data: "))
    assert event["type"] == "error"
    assert event["code"] == "upstream_interrupted"
    assert "broke off" in event["message"]
    assert {"param", "sequence_number"} <= set(event)
    assert_openai_error({"error": event["error"]}, "upstream_interrupted")

    stream = await rig.client().responses.create(model="m", input="hi", stream=True)
    with pytest.raises(openai.APIError, match="broke off"):
        _ = [event async for event in stream]


async def test_a_client_that_leaves_cancels_the_upstream_request(rig: Rig) -> None:
    peer = await rig.peer(endpoints=ALL_ENDPOINTS, script=stall)
    resp = await rig.http.post(
        rig.url + "/v1/responses", json={**REQUEST, "stream": True}, headers=rig.auth
    )
    await asyncio.wait_for(resp.content.readuntil(b": keep-alive\n\n"), 5)
    resp.close()
    await wait_for(lambda: bool(peer.cancels))


async def test_usage_of_responses_is_counted_per_user(rig: Rig) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS, script=stream_events(RESPONSE_EVENTS))
    stream = await rig.client().responses.create(model="m", input="hi", stream=True)
    _ = [event async for event in stream]
    async with rig.http.get(rig.health_url + "/metrics") as resp:
        text = await resp.text()
    assert 'remotellm_broker_user_tokens_total{user="local:alice"} 9.0' in text


async def test_a_wrong_key_and_a_rate_limit_use_openai_errors(tmp_path: Path) -> None:
    async with running_broker(tmp_path, rate_limit_rpm=60, rate_limit_burst=1) as rig:
        await rig.peer(endpoints=ALL_ENDPOINTS, script=answer_json(RESPONSE_JSON))
        with pytest.raises(openai.AuthenticationError):
            await rig.client(api_key="sk-" + "1" * 32).responses.create(**REQUEST)
        await rig.client().responses.create(**REQUEST)
        with pytest.raises(openai.RateLimitError) as caught:
            await rig.client().responses.create(**REQUEST)
    assert int(caught.value.response.headers["retry-after"]) >= 1


async def test_a_model_without_the_responses_api_gets_a_clear_openai_error(rig: Rig) -> None:
    older = await rig.peer()
    with pytest.raises(openai.BadRequestError) as caught:
        await rig.client().responses.create(**REQUEST)
    assert caught.value.code == "unsupported_endpoint"
    assert "/v1/responses" in caught.value.message
    assert "/v1/chat/completions" in caught.value.message
    assert not older.opens


async def test_the_model_listing_shows_which_endpoints_each_model_serves(rig: Rig) -> None:
    await rig.peer(name="new", models=["both"], endpoints=ALL_ENDPOINTS)
    await rig.peer(name="old", models=["plain", "both"])
    listing = await rig.client().models.list()
    by_id = {m.id: (m.model_extra or {})["endpoints"] for m in listing.data}
    assert by_id["plain"] == ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    assert by_id["both"] == sorted(ALL_ENDPOINTS)
    one = await rig.client().models.retrieve("both")
    assert (one.model_extra or {})["endpoints"] == sorted(ALL_ENDPOINTS)


async def test_keep_alive_comments_precede_the_events_during_a_long_prefill(rig: Rig) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS, script=stream_events(RESPONSE_EVENTS, prefill=0.35))
    async with rig.http.post(
        rig.url + "/v1/responses", json={**REQUEST, "stream": True}, headers=rig.auth
    ) as resp:
        body = await resp.read()
    keepalives = body.count(b": keep-alive\n\n")
    assert keepalives >= 2
    assert body == b": keep-alive\n\n" * keepalives + b"".join(RESPONSE_EVENTS)


async def test_a_connector_cannot_put_made_up_endpoints_into_the_listing(rig: Rig) -> None:
    junk = ["/v1/evil", "<script>alert(1)</script>", "x" * 5000, "/v1/messages/batches"]
    peer = await rig.peer(endpoints=junk)
    listing = await rig.client().models.list()
    assert (listing.data[0].model_extra or {})["endpoints"] == [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    ]
    with pytest.raises(openai.BadRequestError):
        await rig.client().responses.create(**REQUEST)
    assert not peer.opens
