"""What may reach the LLM, and how the request is rewritten on its way."""

from typing import Any

import msgspec
import pytest

from remotellm_connector.errors import RequestRefused
from remotellm_connector.forward import UsageMode, plan_request
from remotellm_protocol import Open, Principal

WHO = Principal(user_id="u", key_id="k")


def opened(method: str = "POST", path: str = "/v1/chat/completions", **kw: Any) -> Open:
    return Open(stream=1, correlation_id="c", method=method, path=path, principal=WHO, **kw)


def body(**fields: Any) -> bytes:
    return msgspec.json.encode({"model": "m", "messages": [], **fields})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("post", "/v1/embeddings"),
        ("POST", "/v1/responses"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/responses/resp_abc-123"),
        ("DELETE", "/v1/responses/resp_abc-123"),
        ("POST", "/v1/responses/resp_abc/cancel"),
        ("GET", "/v1/responses/resp_abc/input_items"),
    ],
)
def test_the_api_routes_are_forwarded(method: str, path: str) -> None:
    plan = plan_request(opened(method, path), b"{}" if method == "POST" else b"")
    assert plan.path == path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/responses/resp_abc"),
        ("DELETE", "/v1/responses/resp_abc"),
        ("POST", "/v1/responses/resp_abc/cancel"),
    ],
)
def test_requests_for_a_stored_response_carry_no_body_and_no_usage(method: str, path: str) -> None:
    plan = plan_request(opened(method, path), b'{"model":"m"}')
    assert plan.body == b""
    assert plan.usage is UsageMode.NONE


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/pull"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/generate"),
        ("GET", "/v1/chat/completions"),
        ("POST", "/v1/models"),
        ("POST", "http://169.254.169.254/v1/chat/completions"),
        ("POST", "//evil.example/v1/chat/completions"),
        ("POST", "/v1/../api/pull"),
        ("POST", "/v1/chat/completions/../../api/delete"),
        ("POST", "/v1/%2e%2e/api/pull"),
        ("POST", "/v1/chat/completions?x=1"),
        ("GET", "/v1/models/../../props"),
        ("POST", "/V1/chat/completions"),
        ("GET", "/v1/responses/../../api/pull"),
        ("GET", "/v1/responses/resp_1/../../../api/tags"),
        ("DELETE", "/v1/responses/resp%2F..%2Fx"),
        ("GET", "/v1/responses/resp_1?include=x"),
        ("GET", "/v1/responses/" + "a" * 201),
        ("GET", "/v1/responses/"),
        ("POST", "/v1/responses/resp_1"),
        ("DELETE", "/v1/responses/resp_1/cancel"),
        ("GET", "/v1/messages"),
        ("POST", "/v1/messages/batches"),
        ("POST", "/v1/messages/count_tokens/"),
    ],
)
def test_everything_else_is_refused(method: str, path: str) -> None:
    with pytest.raises(RequestRefused):
        plan_request(opened(method, path), b"{}")


def test_credentials_and_hop_by_hop_headers_never_reach_the_llm() -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer sk-user"),
        ("api-key", "sk-user"),
        ("Cookie", "a=b"),
        ("Connection", "keep-alive, x-foo"),
        ("Transfer-Encoding", "chunked"),
        ("Host", "evil"),
        ("Content-Length", "5"),
        ("X-Request-ID", "req-1"),
        ("User-Agent", "openai-python"),
    ]
    plan = plan_request(opened(headers=headers), body())
    assert [k for k, _ in plan.headers] == ["Content-Type", "X-Request-ID", "User-Agent"]


def test_streaming_chat_gets_include_usage_spliced_in_and_strips_the_chunk() -> None:
    raw = b'  {"model":"m","stream":true,"messages":[{"role":"user","content":"\\u00e9"}]}'
    plan = plan_request(opened(), raw)
    assert plan.usage is UsageMode.STRIP
    assert plan.stream
    assert plan.model == "m"
    assert plan.original_body == raw
    assert plan.body.endswith(raw[3:])  # the client's bytes stay as they were
    assert msgspec.json.decode(plan.body)["stream_options"] == {"include_usage": True}


def test_client_that_asked_for_usage_keeps_its_chunk() -> None:
    plan = plan_request(opened(), body(stream=True, stream_options={"include_usage": True}))
    assert plan.usage is UsageMode.SNIFF
    assert plan.original_body is None


def test_other_stream_options_are_kept_and_usage_added() -> None:
    raw = body(stream=True, stream_options={"include_usage": False, "x": 1})
    plan = plan_request(opened(), raw)
    assert plan.usage is UsageMode.STRIP
    assert msgspec.json.decode(plan.body)["stream_options"] == {"include_usage": True, "x": 1}


def test_without_injection_restores_the_client_body() -> None:
    raw = body(stream=True)
    plan = plan_request(opened(), raw).without_injection()
    assert plan.body == raw
    assert plan.usage is UsageMode.SNIFF
    assert plan.original_body is None


def test_servers_known_to_reject_the_option_do_not_get_it() -> None:
    plan = plan_request(opened(), body(stream=True), inject_usage=False)
    assert plan.usage is UsageMode.SNIFF
    assert plan.body == body(stream=True)


def test_non_streaming_and_embeddings_are_forwarded_unchanged() -> None:
    raw = body()
    assert plan_request(opened(), raw).body == raw
    emb = msgspec.json.encode({"model": "e", "input": "x", "stream": True})
    assert plan_request(opened(path="/v1/embeddings"), emb).body == emb


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'{"stream": "yes"}', b""])
def test_bodies_the_connector_cannot_read_are_forwarded_as_they_are(raw: bytes) -> None:
    plan = plan_request(opened(), raw)
    assert plan.body == raw
    assert plan.model is None
