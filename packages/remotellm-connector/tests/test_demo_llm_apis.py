"""The demo LLM's Responses and Messages routes, byte for byte where SDKs care, and scripting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from click.testing import CliRunner

from remotellm_connector.demo_llm import (
    DemoLLMConfig,
    DemoLLMServer,
    demo_llm_command,
    expected_text,
    serve_demo_llm,
)
from remotellm_connector.demo_llm.script import ScriptError, load_script, parse_rules

WRITE_TOOL = {"name": "Write", "input_schema": {"type": "object", "properties": {}}}
SHELL_TOOL: Any = {"type": "function", "name": "shell", "parameters": {"type": "object"}}


def marker(reply: dict[str, Any]) -> str:
    return f"[[demo-reply {json.dumps(reply)}]]"


@pytest.fixture
async def llm() -> AsyncIterator[DemoLLMServer]:
    async with serve_demo_llm(DemoLLMConfig(tokens=4, models=("demo",), api_key="k")) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as session:
        yield session


async def events(response: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event; every event is one ``event:`` + one ``data:``."""
    raw = (await response.read()).decode()
    assert raw.endswith("\n\n")
    found = []
    for block in raw[:-2].split("\n\n"):
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: "), block
        assert data_line.startswith("data: "), block
        data = json.loads(data_line[6:])
        assert data["type"] == name_line[7:]
        found.append((name_line[7:], data))
    return found


async def test_a_streamed_message_has_anthropics_event_sequence(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    body = {
        "model": "demo",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with http.post(llm.url + "/v1/messages", json=body) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        got = await events(response)
    names = [name for name, _ in got]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(d["delta"]["text"] for n, d in got if n == "content_block_delta")
    assert text == expected_text({"messages": body["messages"]}, 4)
    assert got[0][1]["message"]["usage"]["input_tokens"] > 0
    assert got[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert got[-2][1]["usage"] == {"output_tokens": 4}


async def test_a_scripted_tool_use_streams_as_input_json_deltas(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    args = {"file_path": "/tmp/hello.txt", "content": "hello from the demo LLM"}
    prompt = "write it " + marker(
        {"text": "On it.", "tool_calls": [{"name": "Write", "arguments": args}]}
    )
    body = {
        "model": "demo",
        "max_tokens": 100,
        "stream": True,
        "tools": [WRITE_TOOL],
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
    }
    async with http.post(llm.url + "/v1/messages", json=body) as response:
        got = await events(response)
    starts = [d["content_block"] for n, d in got if n == "content_block_start"]
    assert starts[0] == {"type": "text", "text": ""}
    assert (starts[1]["type"], starts[1]["name"], starts[1]["input"]) == ("tool_use", "Write", {})
    assert starts[1]["id"].startswith("toolu_")
    partial = "".join(
        d["delta"]["partial_json"] for n, d in got if n == "content_block_delta" and d["index"] == 1
    )
    assert json.loads(partial) == args
    assert [d["index"] for n, d in got if n == "content_block_stop"] == [0, 1]
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_a_tool_call_marker_without_the_tool_offered_is_plain_text(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    """Agents' side requests (titles, summaries) repeat the prompt without tools."""
    prompt = "x " + marker({"tool_calls": [{"name": "Write", "arguments": {}}]})
    body = {"model": "demo", "max_tokens": 50, "messages": [{"role": "user", "content": prompt}]}
    async with http.post(llm.url + "/v1/messages", json=body) as response:
        message = await response.json()
    assert message["stop_reason"] == "end_turn"
    assert [block["type"] for block in message["content"]] == ["text"]


async def test_messages_errors_use_anthropics_shape_and_x_api_key(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    body = {"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    wrong = {"x-api-key": "wrong"}
    async with http.post(llm.url + "/v1/messages", json=body, headers=wrong) as response:
        assert response.status == 401
        assert (await response.json())["error"]["type"] == "authentication_error"
    limited = {
        **body,
        "messages": [{"role": "user", "content": marker({"status": 429, "retry_after": 7})}],
    }
    async with http.post(llm.url + "/v1/messages", json=limited) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "7"
        assert await response.json() == {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "demo LLM: HTTP 429 injected by x_status",
            },
        }
    async with http.post(llm.url + "/v1/messages", json={**body, "max_tokens": None}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"


async def test_count_tokens_matches_the_usage(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    body = {"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "count me"}]}
    async with http.post(llm.url + "/v1/messages/count_tokens", json=body) as response:
        counted = (await response.json())["input_tokens"]
    async with http.post(llm.url + "/v1/messages", json=body) as response:
        assert (await response.json())["usage"]["input_tokens"] == counted


async def test_fail_after_cuts_a_messages_stream_before_message_stop(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    body = {
        "model": "demo",
        "max_tokens": 100,
        "stream": True,
        "x_fail_after": 2,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with http.post(llm.url + "/v1/messages", json=body) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert llm.stats.streams_failed == 1


async def test_a_streamed_response_has_openais_event_sequence(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    body = {"model": "demo", "input": "hi", "stream": True}
    async with http.post(llm.url + "/v1/responses", json=body) as response:
        got = await events(response)
    assert [name for name, _ in got] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [d["sequence_number"] for _, d in got] == list(range(len(got)))
    final = got[-1][1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == expected_text({"input": "hi"}, 4)
    assert final["usage"]["output_tokens"] == 4


async def test_a_scripted_function_call_in_responses(llm: DemoLLMServer) -> None:
    args = {"command": ["bash", "-lc", "echo hi > hello.txt"]}
    prompt = "go " + marker({"tool_calls": [{"name": "shell", "arguments": args}]})
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=0)
    async with (
        client,
        client.responses.stream(model="demo", input=prompt, tools=[SHELL_TOOL]) as stream,
    ):
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    (call,) = final.output
    assert call.type == "function_call"
    assert call.name == "shell"
    assert json.loads(call.arguments) == args


async def test_max_output_tokens_ends_incomplete(llm: DemoLLMServer) -> None:
    async with openai.AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=0) as client:
        response = await client.responses.create(model="demo", input="hi", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == expected_text({"input": "hi"}, 2)


SCRIPT = """
- match: "create hello"
  reply: {tool_calls: [{name: Write, arguments: {file_path: hello.txt, content: hi}}]}
- match: "File created"
  api: messages
  reply: {text: "Done."}
- match: "slow please"
  reply: {delay_ms: 5, gap_ms: 1, text: "slow answer"}
"""


async def test_script_rules_drive_a_two_turn_task(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(SCRIPT, encoding="utf-8")
    config = DemoLLMConfig(models=("demo",), script=load_script(path))
    async with serve_demo_llm(config) as server, aiohttp.ClientSession() as http:
        first = [{"role": "user", "content": "please create hello.txt"}]
        body = {"model": "demo", "max_tokens": 99, "tools": [WRITE_TOOL], "messages": first}
        async with http.post(server.url + "/v1/messages", json=body) as response:
            call = (await response.json())["content"][0]
        assert call["type"] == "tool_use"
        assert call["input"] == {"file_path": "hello.txt", "content": "hi"}
        result = {
            "type": "tool_result",
            "tool_use_id": call["id"],
            "content": "File created successfully",
        }
        turn2 = [
            *first,
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]},
        ]
        async with http.post(
            server.url + "/v1/messages", json={**body, "messages": turn2}
        ) as response:
            answer = await response.json()
        assert answer["content"] == [{"type": "text", "text": "Done."}]
        assert answer["stop_reason"] == "end_turn"
        chat = {"model": "demo", "messages": [{"role": "user", "content": "File created"}]}
        async with http.post(server.url + "/v1/chat/completions", json=chat) as response:
            text = (await response.json())["choices"][0]["message"]["content"]
        assert text == expected_text(chat, 16), "a rule for api: messages must not answer chat"


def test_bad_scripts_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="regex"):
        parse_rules([{"match": "(", "reply": {}}])
    with pytest.raises(ScriptError, match="status"):
        parse_rules([{"reply": {"status": 42}}])
    with pytest.raises(ScriptError, match="api"):
        parse_rules([{"api": "grpc", "reply": {}}])
    path = tmp_path / "bad.yaml"
    path.write_text("- reply: {nonsense: 1}\n", encoding="utf-8")
    result = CliRunner().invoke(demo_llm_command(), ["--script", str(path), "--port", "0"])
    assert result.exit_code == 2
    assert "nonsense" in result.output


async def test_a_bad_marker_is_a_400_not_a_crash(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    body = {"model": "demo", "input": "[[demo-reply {not json}]]"}
    async with http.post(llm.url + "/v1/responses", json=body) as response:
        assert response.status == 400
        assert "demo-reply" in (await response.json())["error"]["message"]
    async with http.post(
        llm.url + "/v1/responses", json={"model": "demo", "input": "fine"}
    ) as response:
        assert response.status == 200


async def test_a_tool_result_gets_text_so_an_agent_ends_its_turn(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    """The default calls the first tool, but never in answer to a tool's result (else an agent
    would loop until its turn limit); system messages after the result do not count."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "system", "content": "environment details"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = {"model": "demo", "messages": messages, "tools": tools}
    async with http.post(llm.url + "/v1/chat/completions", json=body) as response:
        choice = (await response.json())["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    first_turn = {**body, "messages": messages[:1]}
    async with http.post(llm.url + "/v1/chat/completions", json=first_turn) as response:
        assert (await response.json())["choices"][0]["finish_reason"] == "tool_calls"
    output = [{"type": "function_call_output", "call_id": "c1", "output": "done"}]
    responses = {"model": "demo", "input": output, "tools": [SHELL_TOOL]}
    async with http.post(llm.url + "/v1/responses", json=responses) as response:
        assert [item["type"] for item in (await response.json())["output"]] == ["message"]


async def test_a_marker_sets_the_length_and_cadence_of_the_default_text(
    llm: DemoLLMServer, http: aiohttp.ClientSession
) -> None:
    prompt = "x " + marker({"tokens": 3, "gap_ms": 30})
    body = {
        "model": "demo",
        "max_tokens": 99,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.post(llm.url + "/v1/messages", json=body) as response:
        got = await events(response)
    assert loop.time() - started >= 0.06
    assert [n for n, _ in got].count("content_block_delta") == 3
