"""The model server's own 5xx answers pass through unchanged (status and body), on every API
surface, so the SDKs retry them exactly as they retry OpenAI's and Anthropic's own 5xx; they
are not turned into 502."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import openai
import pytest

from broker_rig import Rig, running_broker
from surface_scripts import ALL_ENDPOINTS, MESSAGE_JSON, answer_json

LOADING = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'
OVERLOADED = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path) as rig:
        yield rig


@pytest.mark.parametrize("status", [500, 503, 529])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/messages"])
async def test_a_server_5xx_keeps_its_status_and_body(rig: Rig, status: int, path: str) -> None:
    await rig.peer(endpoints=ALL_ENDPOINTS, script=answer_json(LOADING, status=status))
    body = {"model": "m", "input": "x", "messages": [{"role": "user", "content": "x"}]}
    async with rig.http.post(rig.url + path, json=body, headers=rig.auth) as resp:
        assert resp.status == status
        assert await resp.read() == LOADING
        assert resp.headers["Content-Type"].startswith("application/json")


async def test_the_openai_sdk_retries_a_passed_through_503(rig: Rig) -> None:
    answers = iter([answer_json(LOADING, status=503), answer_json(b'{"id":"r","output":[]}')])
    peer = await rig.peer(endpoints=ALL_ENDPOINTS, script=lambda s: next(answers)(s))
    client = rig.client(max_retries=1)
    response = await client.responses.create(model="m", input="x")
    assert response.id == "r"
    assert len(peer.opens) == 2  # the SDK saw a 5xx and tried again


async def test_the_anthropic_sdk_sees_an_upstream_overloaded_error_as_such(rig: Rig) -> None:
    answers = iter([answer_json(OVERLOADED, status=529), answer_json(MESSAGE_JSON)])
    peer = await rig.peer(endpoints=ALL_ENDPOINTS, script=lambda s: next(answers)(s))
    sdk = anthropic.AsyncAnthropic(base_url=rig.url, api_key=rig.key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        await sdk.messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 529
    assert caught.value.body == json.loads(OVERLOADED)
    retrying = sdk.with_options(max_retries=1)
    answers = iter([answer_json(OVERLOADED, status=529), answer_json(MESSAGE_JSON)])
    message = await retrying.messages.create(
        model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    await sdk.close()
    assert message.id == "msg_1"
    assert len(peer.opens) == 3


async def test_the_openai_sdk_raises_internal_server_error_for_a_server_500(rig: Rig) -> None:
    await rig.peer(script=answer_json(LOADING, status=500))
    with pytest.raises(openai.InternalServerError) as caught:
        await rig.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 500
    assert "Loading model" in caught.value.message
