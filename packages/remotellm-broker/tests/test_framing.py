"""The response allowlist (``framing``), unit by unit: which statuses and headers pass."""

from __future__ import annotations

import pytest

from remotellm_broker.framing import MAX_HEADER_VALUE, client_headers, is_response_status


@pytest.mark.parametrize("status", [100, 101, 103, 199, 204, 205, 304, 0, 99, 600, -1])
def test_statuses_without_a_body_or_out_of_range_are_not_response_statuses(status: int) -> None:
    assert not is_response_status(status)


@pytest.mark.parametrize("status", [200, 201, 206, 301, 302, 400, 404, 429, 500, 503, 599])
def test_final_statuses_with_a_body_are_response_statuses(status: int) -> None:
    assert is_response_status(status)


def test_only_content_type_and_retry_after_pass() -> None:
    headers = [
        ("Set-Cookie", "a=b"),
        ("Location", "https://evil.example/"),
        ("Content-Length", "3"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("X-Request-ID", "forged"),
        ("x-ratelimit-remaining-requests", "9"),
        ("request-id", "req_1"),
        ("CONTENT-TYPE", "application/json"),
        ("retry-after", "3"),
    ]
    assert client_headers(429, headers) == {"Content-Type": "application/json", "Retry-After": "3"}


@pytest.mark.parametrize("status", [200, 400, 500, 502])
def test_retry_after_passes_only_with_a_429_or_503(status: int) -> None:
    assert client_headers(status, [("Retry-After", "3")]) == {}


@pytest.mark.parametrize(
    "value", ["0", "120", "Wed, 21 Oct 2015 07:28:00 GMT"], ids=["zero", "seconds", "date"]
)
def test_retry_after_is_delay_seconds_or_an_http_date(value: str) -> None:
    assert client_headers(503, [("Retry-After", value)]) == {"Retry-After": value}


@pytest.mark.parametrize("value", ["-1", "1.5", "soon", "1" * 10, "3, 4"])
def test_a_retry_after_that_is_neither_is_dropped(value: str) -> None:
    assert client_headers(503, [("Retry-After", value)]) == {}


@pytest.mark.parametrize(
    "value",
    [
        "text/html\r\nSet-Cookie: a=b",
        "text/html\nx",
        "text/html\rx",
        "text/html\x00",
        "text/html\x7f",
        "text/htmlé",
        "text/" + "x" * MAX_HEADER_VALUE,
        "nonsense",
        "",
        "text/plain, text/html",
    ],
)
def test_a_content_type_that_is_not_a_clean_media_type_is_dropped(value: str) -> None:
    assert client_headers(200, [("Content-Type", value)]) == {}


def test_the_first_acceptable_value_of_a_header_wins() -> None:
    headers = [
        ("content-type", "bad\r\nvalue"),
        ("content-type", "text/event-stream; charset=utf-8"),
        ("content-type", "text/html"),
    ]
    assert client_headers(200, headers) == {"Content-Type": "text/event-stream; charset=utf-8"}
