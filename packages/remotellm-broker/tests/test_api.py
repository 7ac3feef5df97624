"""The OpenAI API surface, end to end: a real broker, a scripted connector, real clients."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import openai
import pytest

from broker_rig import Rig, assert_openai_error, read_sse, running_broker
from connector_peer import PeerStream, fail_with, serve_json, serve_sse
from remotellm_protocol import BODY_CHUNK_BYTES, ErrorCode

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
EMBEDDING = (
    b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,0.25]}],'
    b'"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}'
)
UPSTREAM_400 = (
    b'{"error":{"message":"context too long","type":"invalid_request_error","code":"ctx"}}'
)
COMPLETION = (
    b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}'
)


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path) as rig:
        yield rig


async def test_streaming_chat_with_the_openai_sdk_gets_every_chunk(rig: Rig) -> None:
    await rig.peer(script=serve_sse(5))
    stream = await rig.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = [chunk.choices[0].delta.content async for chunk in stream]
    assert text == [f"tok{i} " for i in range(5)]


async def test_stream_response_headers_disable_buffering_and_carry_the_request_id(rig: Rig) -> None:
    await rig.peer(script=serve_sse(2))
    headers = {**rig.auth, "X-Request-ID": "my-trace.id_42"}
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
    ) as resp:
        lines = await read_sse(resp)
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert "Content-Encoding" not in resp.headers
        assert resp.headers["X-Request-ID"] == "my-trace.id_42"
    assert lines[-1] == "data: [DONE]"


async def test_open_frame_carries_request_id_principal_and_only_safe_headers(rig: Rig) -> None:
    peer = await rig.peer(script=serve_json(COMPLETION))
    headers = {
        **rig.auth,
        "X-Request-ID": "trace-1",
        "Cookie": "session=secret",
        "User-Agent": "tests/1.0",
        "Accept": "application/json",
    }
    body = json.dumps(CHAT).encode()
    async with rig.http.post(
        rig.url + "/v1/chat/completions",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200
    opened = peer.opens[-1]
    assert opened.correlation_id == "trace-1"
    assert (opened.method, opened.path) == ("POST", "/v1/chat/completions")
    assert opened.principal.user_id == "local:alice"
    identity = rig.store.authenticate(rig.key)
    assert identity is not None
    assert opened.principal.key_id == identity.key_id
    names = {name for name, _ in opened.headers}
    assert names == {"content-type", "accept", "user-agent", "x-request-id"}
    assert rig.key not in repr(opened)
    assert opened.body == body
    assert opened.deadline_ms is not None
    assert opened.deadline_ms > 0


async def test_non_streaming_chat_returns_the_upstream_json(rig: Rig) -> None:
    await rig.peer(script=serve_json(COMPLETION))
    reply = await rig.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "hi there"
    assert reply.usage is not None
    assert reply.usage.total_tokens == 4


async def test_completions_stream_and_embeddings_are_relayed(rig: Rig) -> None:
    peer = await rig.peer(script=serve_sse(2))
    stream = await rig.client().completions.create(model="m", prompt="hi", stream=True)
    assert len([c async for c in stream]) == 2
    assert peer.opens[-1].path == "/v1/completions"
    peer.script = serve_json(EMBEDDING)
    result = await rig.client().embeddings.create(model="m", input="hello")
    assert result.data[0].embedding == [0.5, 0.25]
    assert peer.opens[-1].path == "/v1/embeddings"


async def test_azure_style_api_key_header_is_accepted(rig: Rig) -> None:
    await rig.peer(script=serve_json(COMPLETION))
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json=CHAT, headers={"api-key": rig.key}
    ) as resp:
        assert resp.status == 200


async def test_large_request_bodies_arrive_intact_in_pieces(rig: Rig) -> None:
    peer = await rig.peer(script=serve_json(COMPLETION))
    big = "x" * (3 * BODY_CHUNK_BYTES + 12345)
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": big}]}).encode()
    async with rig.http.post(
        rig.url + "/v1/chat/completions",
        data=body,
        headers={**rig.auth, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200
    opened = peer.opens[-1]
    assert opened.more_body
    assert bytes(peer.streams[opened.stream].body) == body


async def test_model_listing_is_the_union_with_context_length(rig: Rig) -> None:
    await rig.peer(name="a", models=["m1", "org/m2"], context_length=8192)
    await rig.peer(name="b", models=["m2", "m1"])
    models = await rig.client().models.list()
    by_id = {m.id: m for m in models.data}
    assert sorted(by_id) == ["m1", "m2", "org/m2"]
    assert by_id["org/m2"].model_extra == {
        "available": True,
        "endpoints": ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"],
        "context_length": 8192,
        "max_model_len": 8192,
    }
    assert by_id["m2"].owned_by == "tests"
    one = await rig.client().models.retrieve("org/m2")
    assert one.id == "org/m2"
    with pytest.raises(openai.NotFoundError) as caught:
        await rig.client().models.retrieve("missing")
    assert caught.value.code == "model_not_found"


async def test_model_listing_needs_a_key(rig: Rig) -> None:
    async with rig.http.get(rig.url + "/v1/models") as resp:
        assert resp.status == 401
        assert_openai_error(await resp.json())
        assert resp.headers["X-Request-ID"]


async def test_unknown_model_is_404_model_not_found(rig: Rig) -> None:
    await rig.peer()
    with pytest.raises(openai.NotFoundError) as caught:
        await rig.client().chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


async def test_upstream_error_status_and_body_pass_through(rig: Rig) -> None:
    upstream = (
        b'{"error":{"message":"context too long","type":"invalid_request_error","code":"ctx"}}'
    )
    await rig.peer(script=serve_json(upstream, status=400))
    with pytest.raises(openai.BadRequestError) as caught:
        await rig.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["message"] == "context too long"


async def test_a_stream_the_model_refuses_up_front_keeps_its_status(rig: Rig) -> None:
    # Cline and others recognise "context window exceeded" by the 400, also for streams.
    await rig.peer(script=serve_json(UPSTREAM_400, status=400))
    with pytest.raises(openai.BadRequestError) as caught:
        await rig.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert caught.value.body["message"] == "context too long"
    assert caught.value.code == "ctx"


async def test_a_refusal_after_keep_alives_started_is_an_sse_error_event(tmp_path: Path) -> None:
    async def late_refusal(stream: PeerStream) -> None:
        await asyncio.sleep(0.25)  # past the first keep-alive: the 200 is out already
        await serve_json(UPSTREAM_400, status=400)(stream)

    async with running_broker(tmp_path, keepalive_interval_s=0.1) as rig:
        await rig.peer(script=late_refusal)
        stream = await rig.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with pytest.raises(openai.APIError, match="context too long"):
            async for _ in stream:
                pass


async def test_connector_error_before_the_response_maps_to_a_status(rig: Rig) -> None:
    peer = await rig.peer(script=fail_with(ErrorCode.UPSTREAM_UNREACHABLE, "refused"))
    with pytest.raises(openai.InternalServerError) as caught:
        await rig.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"
    peer.script = fail_with(ErrorCode.UPSTREAM_TIMEOUT)
    async with rig.http.post(rig.url + "/v1/chat/completions", json=CHAT, headers=rig.auth) as resp:
        assert resp.status == 504
        assert_openai_error(await resp.json(), "upstream_timeout")
    peer.script = fail_with(ErrorCode.RATE_LIMITED, retry_after=7.5)
    async with rig.http.post(rig.url + "/v1/chat/completions", json=CHAT, headers=rig.auth) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "8"
    peer.script = fail_with(ErrorCode.POLICY_DENIED)
    async with rig.http.post(rig.url + "/v1/chat/completions", json=CHAT, headers=rig.auth) as resp:
        assert resp.status == 403


async def test_connector_error_before_a_stream_started_keeps_its_status(rig: Rig) -> None:
    await rig.peer(script=fail_with(ErrorCode.UPSTREAM_UNREACHABLE, "refused"))
    async with rig.http.post(
        rig.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=rig.auth
    ) as resp:
        assert resp.status == 502
        assert_openai_error(await resp.json(), "upstream_unreachable")


async def test_connector_error_after_keep_alives_is_an_error_event_without_done(
    tmp_path: Path,
) -> None:
    async def late_failure(stream: PeerStream) -> None:
        await asyncio.sleep(0.25)
        await fail_with(ErrorCode.UPSTREAM_TIMEOUT, "slow")(stream)

    async with running_broker(tmp_path, keepalive_interval_s=0.1) as rig:
        await rig.peer(script=late_failure)
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=rig.auth
        ) as resp:
            assert resp.status == 200
            lines = await read_sse(resp)
    assert lines[:2] == [": keep-alive", ": keep-alive"]
    assert lines[-2] == "event: error"
    assert_openai_error(json.loads(lines[-1].removeprefix("data: ")), "upstream_timeout")
    assert "data: [DONE]" not in lines


async def test_every_response_has_a_request_id_and_insane_ones_are_replaced(rig: Rig) -> None:
    for given in ["x" * 129, "has space", "semi;colon", ""]:
        async with rig.http.get(
            rig.url + "/v1/models", headers={**rig.auth, "X-Request-ID": given}
        ) as resp:
            rid = resp.headers["X-Request-ID"]
            assert rid != given
            assert 0 < len(rid) <= 128
    async with rig.http.get(rig.url + "/nowhere", headers={"X-Request-ID": "abc"}) as resp:
        assert resp.status == 404
        assert resp.headers["X-Request-ID"] == "abc"


async def test_openapi_document_describes_the_api(rig: Rig) -> None:
    async with rig.http.get(rig.url + "/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ]:
        assert path in doc["paths"]
    assert "Error" in doc["components"]["schemas"]


async def test_usage_is_counted_per_user_in_metrics(rig: Rig) -> None:
    await rig.peer(script=serve_sse(3))
    stream = await rig.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    _ = [c async for c in stream]
    async with rig.http.get(rig.health_url + "/metrics") as resp:
        text = await resp.text()
    assert 'remotellm_broker_user_tokens_total{user="local:alice"} 8.0' in text
    assert 'remotellm_broker_requests_total{model="m",status="200"} 1.0' in text
