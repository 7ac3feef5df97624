"""Small pure pieces: body validation, the error mapping, request ids, metrics."""

from __future__ import annotations

import pytest

from remotellm_broker.bodies import parse_body
from remotellm_broker.exchange import request_id_for
from remotellm_broker.metrics import Metrics
from remotellm_broker.openai_errors import (
    ERROR_STATUS,
    OpenAIError,
    from_cancel,
    from_stream_error,
    retry_after_header,
)
from remotellm_protocol import CancelReason, ErrorCode, StreamError, Usage


def test_every_error_code_has_a_status() -> None:
    assert set(ERROR_STATUS) == set(ErrorCode)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.UPSTREAM_UNREACHABLE, 502),
        (ErrorCode.UPSTREAM_TIMEOUT, 504),
        (ErrorCode.UPSTREAM_STATUS, 502),
        (ErrorCode.POLICY_DENIED, 403),
        (ErrorCode.RATE_LIMITED, 429),
        (ErrorCode.OVERLOADED, 503),
        (ErrorCode.BAD_REQUEST, 400),
        (ErrorCode.INTERNAL, 502),
        (ErrorCode.GOING_AWAY, 503),
        (ErrorCode.UNKNOWN, 502),
    ],
)
def test_stream_errors_map_to_the_agreed_status(code: ErrorCode, status: int) -> None:
    err = from_stream_error(StreamError(code=int(code), message="detail"))
    assert err.status == status
    assert "detail" in err.message


def test_a_code_from_a_newer_peer_is_a_502() -> None:
    assert from_stream_error(StreamError(code=999)).status == 502


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert retry_after_header(0.2) == {"Retry-After": "1"}
    assert retry_after_header(2.1) == {"Retry-After": "3"}
    assert retry_after_header(None, default=5) == {"Retry-After": "5"}
    err = from_stream_error(StreamError(code=int(ErrorCode.OVERLOADED), retry_after=4))
    assert err.headers == {"Retry-After": "4"}


def test_cancel_reasons_map_to_errors() -> None:
    assert from_cancel(CancelReason.USER_BLOCKED).status == 403
    assert from_cancel(CancelReason.DEADLINE).status == 504
    assert from_cancel(CancelReason.SHUTDOWN).status == 503
    assert from_cancel(CancelReason.CLIENT_GONE).status == 499


def test_sse_error_event_shape() -> None:
    event = OpenAIError(502, "broke", code="x").sse_event()
    assert event.startswith(b"event: error\ndata: {")
    assert event.endswith(b"}\n\n")
    assert b"[DONE]" not in event


def test_body_parsing_finds_model_and_stream() -> None:
    parsed = parse_body(
        "/v1/chat/completions", b'{"model":"m","messages":[{}],"stream":true,"n":2}'
    )
    assert (parsed.model, parsed.stream) == ("m", True)
    assert not parse_body("/v1/completions", b'{"model":"m","prompt":"x","stream":null}').stream
    assert not parse_body("/v1/embeddings", b'{"model":"m","input":["a"],"stream":true}').stream


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-123_x.y", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("a b", False),
        ("ü", False),
        ("", False),
    ],
)
def test_request_ids_are_kept_only_when_sane(given: str, kept: bool) -> None:
    rid = request_id_for({"X-Request-ID": given})
    assert (rid == given) is kept
    assert 0 < len(rid) <= 128


def test_metrics_record_a_request_once() -> None:
    metrics = Metrics()
    usage = Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
    metrics.request_done(
        model="m", status=200, duration_s=0.5, ttft_s=0.1, nbytes=100, usage=usage, user_id="u"
    )
    metrics.request_done(model="m", status=200, duration_s=0.5, user_id="u", usage=usage)
    text = metrics.exposition().decode()
    assert 'remotellm_broker_requests_total{model="m",status="200"} 2.0' in text
    assert 'remotellm_broker_user_tokens_total{user="u"} 14.0' in text
    assert "remotellm_broker_relayed_bytes_total 100.0" in text
    assert 'remotellm_broker_ttft_seconds_count{model="m"} 1.0' in text
