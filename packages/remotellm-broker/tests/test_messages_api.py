"""The Anthropic Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) through the
broker, driven by the real ``anthropic`` SDK and by raw HTTP where the SDK hides the bytes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest

from broker_rig import Rig, read_sse, running_broker, wait_for
from connector_peer import PeerStream, stall
from remotellm_protocol import ErrorCode, StreamError
from surface_scripts import ALL_ENDPOINTS, MESSAGE_EVENTS, MESSAGE_JSON, answer_json, stream_events

MESSAGE = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path, keepalive_interval_s=0.1) as rig:
        yield rig


def client(rig: Rig, **kwargs: Any) -> anthropic.AsyncAnthropic:
    kwargs.setdefault("api_key", rig.key)
    return anthropic.AsyncAnthropic(base_url=rig.url, max_retries=0, **kwargs)


def assert_anthropic_error(body: Any, type_: str) -> None:
    assert isinstance(body, dict), body
    assert body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == type_, body
    assert body["error"]["message"]


async def test_the_anthropic_sdk_streams_through_keep_alives_during_a_long_prefill(
    rig: Rig,
) -> None:
    peer = await rig.peer(
        endpoints=ALL_ENDPOINTS, script=stream_events(MESSAGE_EVENTS, prefill=0.45)
    )
    sdk = client(rig)
    async with sdk.messages.stream(**MESSAGE) as stream:  # type: ignore[arg-type]
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    await sdk.close()
    assert "".join(texts) == "Hi there"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 7
    assert final.usage.output_tokens == 2
    assert peer.opens[0].path == "/v1/messages"


async def test_stream_bytes_pass_unchanged_with_keep_alive_comments_before_them(rig: Rig) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS, script=stream_events(MESSAGE_EVENTS, prefill=0.35))
    async with rig.http.post(
        rig.url + "/v1/messages", json={**MESSAGE, "stream": True}, headers={"x-api-key": rig.key}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        body = await resp.read()
    keepalives = body.count(b": keep-alive\n\n")
    assert keepalives >= 2
    assert body == b": keep-alive\n\n" * keepalives + b"".join(MESSAGE_EVENTS)


async def test_x_api_key_and_bearer_both_authenticate_and_the_anthropic_headers_go_upstream(
    rig: Rig,
) -> None:
    peer = await rig.peer(endpoints=ALL_ENDPOINTS, script=answer_json(MESSAGE_JSON))
    sdk = client(
        rig,
        default_headers={"anthropic-beta": "tools-2024-04-04", "anthropic-version": "2023-06-01"},
    )
    message = await sdk.messages.create(**MESSAGE)  # type: ignore[arg-type]
    bearer = client(rig, api_key=None, auth_token=rig.key)
    again = await bearer.messages.create(**MESSAGE)  # type: ignore[arg-type]
    await sdk.close()
    await bearer.close()
    assert message.content[0].text == "Hi there"  # type: ignore[union-attr]
    assert again.id == "msg_1"
    headers = dict(peer.opens[0].headers)
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "tools-2024-04-04"
    assert "x-api-key" not in headers
    assert "authorization" not in dict(peer.opens[1].headers)


async def test_count_tokens_is_relayed(rig: Rig) -> None:
    peer = await rig.peer(endpoints=ALL_ENDPOINTS, script=answer_json(b'{"input_tokens":12}'))
    sdk = client(rig)
    counted = await sdk.messages.count_tokens(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    await sdk.close()
    assert counted.input_tokens == 12
    assert peer.opens[0].path == "/v1/messages/count_tokens"


async def test_a_wrong_x_api_key_gets_the_sdks_authentication_error(rig: Rig) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS)
    sdk = client(rig, api_key="sk-" + "0" * 32)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await sdk.messages.create(**MESSAGE)  # type: ignore[arg-type]
    await sdk.close()
    assert caught.value.status_code == 401
    assert_anthropic_error(caught.value.body, "authentication_error")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": ""},
        {"x-api-key": "sk-" + "x" * 5000},
        {"x-api-key": "sk-\u00e9\u00e9"},
        {"Authorization": "Basic abc", "x-api-key": "ignored-when-authorization-is-sent"},
    ],
)
async def test_missing_or_bad_keys_get_an_anthropic_shaped_401(
    rig: Rig, headers: dict[str, str]
) -> None:
    async with rig.http.post(rig.url + "/v1/messages", json=MESSAGE, headers=headers) as resp:
        assert resp.status == 401
        assert_anthropic_error(await resp.json(), "authentication_error")
        assert resp.headers["X-Request-ID"]


async def test_a_blocked_user_gets_permission_error(rig: Rig) -> None:
    rig.store.block("alice")
    await wait_for(lambda: (i := rig.store.authenticate(rig.key)) is not None and i.blocked)
    async with rig.http.post(
        rig.url + "/v1/messages", json=MESSAGE, headers={"x-api-key": rig.key}
    ) as resp:
        assert resp.status == 403
        assert_anthropic_error(await resp.json(), "permission_error")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "parse the JSON"),
        (b"[]", "JSON object"),
        (b'{"model":"m"}', "messages"),
        (b'{"model":"m","messages":[]}', "messages"),
        (b'{"model":7,"messages":[{}]}', "model"),
        (b"\xff\xfe", "UTF-8"),
        (b'{"model":"m","messages":' + b"[" * 100000 + b"]" * 100000 + b"}", "nested"),
    ],
)
async def test_malformed_bodies_get_an_anthropic_shaped_400(
    rig: Rig, body: bytes, fragment: str
) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS)
    async with rig.http.post(
        rig.url + "/v1/messages",
        data=body,
        headers={"x-api-key": rig.key, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        payload = await resp.json()
    assert_anthropic_error(payload, "invalid_request_error")
    assert fragment in payload["error"]["message"]


async def test_an_oversized_body_gets_request_too_large_before_the_key_is_checked(
    tmp_path: Path,
) -> None:
    async with running_broker(tmp_path, max_body_bytes=1024) as rig:
        big = json.dumps({**MESSAGE, "system": "x" * 4096})
        for headers in ({"x-api-key": rig.key}, {"x-api-key": "sk-wrong"}):
            async with rig.http.post(
                rig.url + "/v1/messages",
                data=big,
                headers={**headers, "Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 413
                assert_anthropic_error(await resp.json(), "request_too_large")

        async def chunked():  # type: ignore[no-untyped-def]
            yield big.encode()  # no Content-Length: the limit is met while reading

        async with rig.http.post(
            rig.url + "/v1/messages/count_tokens",
            data=chunked(),
            headers={"x-api-key": rig.key, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 413
            assert_anthropic_error(await resp.json(), "request_too_large")


async def test_unknown_model_and_unknown_messages_paths_are_not_found_errors(rig: Rig) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS)
    sdk = client(rig)
    with pytest.raises(anthropic.NotFoundError) as caught:
        await sdk.messages.create(**{**MESSAGE, "model": "nope"})  # type: ignore[arg-type]
    await sdk.close()
    assert_anthropic_error(caught.value.body, "not_found_error")
    async with rig.http.post(
        rig.url + "/v1/messages/batches", json=MESSAGE, headers={"x-api-key": rig.key}
    ) as resp:
        assert resp.status == 404
        assert_anthropic_error(await resp.json(), "not_found_error")
    async with rig.http.get(rig.url + "/v1/messages", headers={"x-api-key": rig.key}) as resp:
        assert resp.status == 405
        assert_anthropic_error(await resp.json(), "invalid_request_error")


async def test_rate_limited_requests_get_rate_limit_error_with_retry_after(tmp_path: Path) -> None:
    async with running_broker(tmp_path, rate_limit_rpm=60, rate_limit_burst=1) as rig:
        await rig.peer(endpoints=ALL_ENDPOINTS, script=answer_json(MESSAGE_JSON))
        sdk = client(rig)
        await sdk.messages.create(**MESSAGE)  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError) as caught:
            await sdk.messages.create(**MESSAGE)  # type: ignore[arg-type]
        await sdk.close()
    assert_anthropic_error(caught.value.body, "rate_limit_error")
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.response.headers["x-ratelimit-limit-requests"]


@pytest.mark.parametrize(
    ("code", "status", "type_"),
    [
        (ErrorCode.OVERLOADED, 503, "overloaded_error"),
        (ErrorCode.UPSTREAM_UNREACHABLE, 502, "api_error"),
        (ErrorCode.UPSTREAM_TIMEOUT, 504, "api_error"),
        (ErrorCode.POLICY_DENIED, 403, "permission_error"),
    ],
)
async def test_connector_failures_before_the_answer_use_anthropic_types(
    rig: Rig, code: ErrorCode, status: int, type_: str
) -> None:
    async def fail(stream: PeerStream) -> None:
        await stream.end(error=StreamError(code=int(code), message="x", retry_after=2))

    await rig.peer(endpoints=ALL_ENDPOINTS, script=fail)
    async with rig.http.post(
        rig.url + "/v1/messages", json=MESSAGE, headers={"x-api-key": rig.key}
    ) as resp:
        assert resp.status == status
        assert_anthropic_error(await resp.json(), type_)
        if status == 503:
            assert resp.headers["Retry-After"] == "2"


async def test_a_failure_mid_stream_is_an_error_event_and_never_a_message_stop(rig: Rig) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS, script=stream_events(MESSAGE_EVENTS, fail_after=4))
    async with rig.http.post(
        rig.url + "/v1/messages", json={**MESSAGE, "stream": True}, headers={"x-api-key": rig.key}
    ) as resp:
        assert resp.status == 200
        lines = await read_sse(resp)
    assert "event: message_stop" not in lines
    assert lines[-2] == "event: error"
    assert_anthropic_error(json.loads(lines[-1].removeprefix("data: ")), "api_error")

    sdk = client(rig)
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with sdk.messages.stream(**MESSAGE) as stream:  # type: ignore[arg-type]
            _ = [text async for text in stream.text_stream]
    await sdk.close()
    assert "broke off" in str(caught.value)


async def test_a_client_that_leaves_mid_prefill_cancels_the_stream(rig: Rig) -> None:
    peer = await rig.peer(endpoints=ALL_ENDPOINTS, script=stall)
    resp = await rig.http.post(
        rig.url + "/v1/messages", json={**MESSAGE, "stream": True}, headers={"x-api-key": rig.key}
    )
    await asyncio.wait_for(resp.content.readuntil(b": keep-alive\n\n"), 5)
    left = time.monotonic()
    resp.close()
    await wait_for(lambda: bool(peer.cancels))
    assert peer.cancels[0][2] - left < 2


async def test_a_model_whose_server_has_no_messages_api_gets_a_clear_error(rig: Rig) -> None:
    old = await rig.peer()  # an older connector: announces no endpoints
    sdk = client(rig)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await sdk.messages.create(**MESSAGE)  # type: ignore[arg-type]
    await sdk.close()
    body = caught.value.body
    assert_anthropic_error(body, "invalid_request_error")
    message = body["error"]["message"]  # type: ignore[index]
    assert "/v1/messages" in message
    assert "/v1/chat/completions" in message
    assert not old.opens


async def test_only_connectors_that_offer_the_messages_api_get_messages_requests(
    rig: Rig,
) -> None:
    plain = await rig.peer(name="plain", max_streams=8)
    able = await rig.peer(
        name="able", endpoints=ALL_ENDPOINTS, max_streams=1, script=answer_json(MESSAGE_JSON)
    )
    sdk = client(rig)
    for _ in range(4):
        await sdk.messages.create(**MESSAGE)  # type: ignore[arg-type]
    await sdk.close()
    assert len(able.opens) == 4
    assert not plain.opens
