"""A real server's answers through the relay: the recorded llama.cpp responses, byte for byte.

In ``replay`` mode (the default) the connector talks to the replay server, so every relayed
byte is compared with the recording: SSE framing, llama.cpp's chunk shapes, its usage chunk,
tool-call deltas, its 4xx/5xx bodies. In ``live`` mode the connector talks to the real
endpoint and only the shapes are checked (see ``harness.modes``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import urllib.request
from collections.abc import AsyncIterator

import openai
import pytest

from conftest import Relay, wait_models
from harness.cassettes import CATALOGUE, Interaction
from harness.modes import UpstreamChoice
from harness.replay import serve_replay, sse_events
from harness.sse import RawResponse, post_raw
from harness.stack import BrokerHandle, inprocess_connector
from harness.waits import wait_for_async

# Every relayed request, except the stream the LLM refuses up front (its own test below).
RELAYED = [e.name for e in CATALOGUE if e.method == "POST" and e.name != "error_400_context"]


@pytest.fixture
def by_name(recorded: list[Interaction], upstream_mode: UpstreamChoice) -> dict[str, Interaction]:
    """The interactions by name; in live mode their requests name the live model."""
    items = {i.name: i for i in recorded}
    if replaying(upstream_mode):
        return items
    assert upstream_mode.llm_url is not None
    model = upstream_mode.model or _first_model(upstream_mode.llm_url, upstream_mode.api_key)
    for entry in CATALOGUE:
        if entry.body is not None:
            body = json.dumps(entry.body(model)).encode()
            items[entry.name] = dataclasses.replace(items[entry.name], request_body=body)
    return items


def _first_model(url: str, api_key: str | None) -> str:
    request = urllib.request.Request(f"{url}/v1/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["data"][0]["id"])


@pytest.fixture
async def llm_endpoint(
    upstream_mode: UpstreamChoice, recorded: list[Interaction]
) -> AsyncIterator[tuple[str, str | None]]:
    """(base URL, API key) of the upstream: the replay server, or the live endpoint."""
    if upstream_mode.mode == "live":
        assert upstream_mode.llm_url is not None
        yield upstream_mode.llm_url, upstream_mode.api_key
        return
    # A millisecond between events, so the stream reaches the relay as a stream.
    async with serve_replay(recorded, gap_s=0.001) as replay:
        yield replay.url, None
    assert not replay.misses, f"requests the recording never saw: {replay.misses}"


@pytest.fixture
async def recorded_relay(
    broker: BrokerHandle,
    upstream_mode: UpstreamChoice,
    by_name: dict[str, Interaction],
    llm_endpoint: tuple[str, str | None],
) -> AsyncIterator[Relay]:
    """Broker + connector in front of the replay server (or the live endpoint)."""
    key = broker.add_user("recorded")
    url, api_key = llm_endpoint
    token = broker.connector_token()
    async with inprocess_connector(broker.relay_url, token, url, llm_api_key=api_key) as c:
        relay = Relay(broker, c, key, url)
        if replaying(upstream_mode):
            models = json.loads(by_name["models"].body)
            await wait_models(relay, {m["id"] for m in models["data"]})
        else:
            async with relay.async_client() as client:

                async def any_model() -> bool:
                    return bool([m async for m in client.models.list()])

                await wait_for_async(any_model, 15, what="the live endpoint's models")
        yield relay


def replaying(mode: UpstreamChoice) -> bool:
    return mode.mode != "live"


def without_usage_chunk(body: bytes) -> bytes:
    """The recorded stream as a client that did not ask for usage must get it."""
    return b"".join(e for e in sse_events(body) if b'"choices":[]' not in e)


def deltas(body: bytes, field: str = "content") -> str:
    out = []
    for event in RawResponse(200, {}, body).data_events:
        if event.event is None and event.data != "[DONE]":
            for choice in event.json.get("choices", []):
                value = choice.get("delta", {}).get(field) or choice.get("text")
                out.append(value or "")
    return "".join(out)


async def test_models_and_context_length_come_from_the_server(
    recorded_relay: Relay, upstream_mode: UpstreamChoice, by_name: dict[str, Interaction]
) -> None:
    async with recorded_relay.async_client() as client:
        listed = [m async for m in client.models.list()]
    assert listed
    if replaying(upstream_mode):
        assert [m.id for m in listed] == [
            m["id"] for m in json.loads(by_name["models"].body)["data"]
        ]
        n_ctx = json.loads(by_name["props"].body)["default_generation_settings"]["n_ctx"]
        assert (listed[0].model_extra or {}).get("context_length") == n_ctx


@pytest.mark.parametrize("name", RELAYED)
async def test_a_recorded_answer_is_relayed_byte_for_byte(
    recorded_relay: Relay, upstream_mode: UpstreamChoice, by_name: dict[str, Interaction], name: str
) -> None:
    item = by_name[name]
    response = await post_raw(recorded_relay.url(item.path), recorded_relay.key, item.request_body)
    if not replaying(upstream_mode):
        if response.status in (404, 501) and item.path == "/v1/embeddings":
            pytest.skip("the live endpoint serves no embeddings")
        assert response.status < 500 or item.status >= 500
        return
    assert response.status == item.status
    assert response.body == item.body
    if item.is_sse:  # the broker sets its own SSE headers (no-cache, no buffering)
        assert (response.header("Content-Type") or "").startswith("text/event-stream")
        assert len(response.chunks) > 1, "a stream must arrive as a stream"
    else:
        assert response.header("Content-Type") == item.content_type


async def test_a_stream_the_llm_refuses_up_front_keeps_the_llms_status(
    recorded_relay: Relay, upstream_mode: UpstreamChoice, by_name: dict[str, Interaction]
) -> None:
    """llama.cpp refuses a prompt longer than its context with HTTP 400, also when
    ``stream`` is true, before sending anything. OpenAI does the same, and clients rely on
    it: Cline, for one, recognises "context window exceeded" by the 400 and then trims the
    conversation. A relay that answers 200 and puts the error in an SSE event hides that.
    """
    item = by_name["error_400_context"]
    response = await post_raw(recorded_relay.url(item.path), recorded_relay.key, item.request_body)
    if not replaying(upstream_mode):
        assert response.status == 400
        return
    assert b"[DONE]" not in response.body
    recorded_error = json.loads(item.body)["error"]
    if response.status == 200:  # what the broker does today: the message survives, the status not
        relayed = response.data_events[-1].json["error"]
        assert relayed["message"] == recorded_error["message"]
    assert response.status == item.status == 400
    assert response.json["error"]["message"] == recorded_error["message"]


async def test_a_stream_without_include_usage_gets_the_recording_minus_the_usage_chunk(
    recorded_relay: Relay, upstream_mode: UpstreamChoice, by_name: dict[str, Interaction]
) -> None:
    item = by_name["chat_stream"]
    body = {k: v for k, v in item.request_json.items() if k != "stream_options"}
    response = await post_raw(recorded_relay.url(item.path), recorded_relay.key, body)
    assert response.status == 200
    assert b'"choices":[]' not in response.body
    if replaying(upstream_mode):
        assert response.body == without_usage_chunk(item.body)


async def test_the_async_sdk_gets_the_recorded_answers(
    recorded_relay: Relay, upstream_mode: UpstreamChoice, by_name: dict[str, Interaction]
) -> None:
    chat, stream, tools = by_name["chat"], by_name["chat_stream"], by_name["tool_calls_stream"]
    async with recorded_relay.async_client() as client:
        answer = await client.chat.completions.create(**chat.request_json)
        pieces = [
            c.choices[0].delta.content or ""
            async for c in await client.chat.completions.create(**stream.request_json)
            if c.choices
        ]
        arguments = [
            c.choices[0].delta.tool_calls[0].function.arguments or ""
            async for c in await client.chat.completions.create(**tools.request_json)
            if c.choices and c.choices[0].delta.tool_calls
        ]
    if replaying(upstream_mode):
        recorded_message = json.loads(chat.body)["choices"][0]["message"]
        assert answer.choices[0].message.content == recorded_message["content"]
        assert "".join(pieces) == deltas(stream.body)
        recorded_args = "".join(
            e.json["choices"][0]["delta"]["tool_calls"][0]["function"].get("arguments") or ""
            for e in RawResponse(200, {}, tools.body).data_events
            if e.data != "[DONE]"
            and e.json["choices"]
            and e.json["choices"][0]["delta"].get("tool_calls")
        )
        assert "".join(arguments) == recorded_args
        json.loads(recorded_args)  # a complete JSON object, as the tool-calling model sent it
    else:
        assert answer.choices
        assert pieces


async def test_the_sync_sdk_gets_the_recorded_answers(
    recorded_relay: Relay, upstream_mode: UpstreamChoice, by_name: dict[str, Interaction]
) -> None:
    completion, embeddings = by_name["completion_stream"], by_name["embeddings"]

    def run() -> tuple[str, list[list[float]]]:
        with recorded_relay.sync_client() as client:
            stream = client.completions.create(**completion.request_json)
            text = "".join(c.choices[0].text for c in stream if c.choices)
            try:
                vectors = client.embeddings.create(**embeddings.request_json)
            except openai.APIStatusError as exc:  # a live endpoint may serve no embeddings
                if replaying(upstream_mode) or exc.status_code not in (404, 501):
                    raise
                return text, [[0.0]]
            return text, [d.embedding for d in vectors.data]

    text, vectors = await asyncio.to_thread(run)
    if replaying(upstream_mode):
        assert text == deltas(completion.body)
        assert vectors == [d["embedding"] for d in json.loads(embeddings.body)["data"]]
    else:
        assert text
        assert vectors
