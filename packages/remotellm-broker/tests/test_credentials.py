"""The one reading of credentials from request headers (``credentials``)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from remotellm_broker.credentials import MAX_API_KEY_CHARS, api_key, bearer_token, plausible


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer sk-abc", "sk-abc"),
        ("bearer sk-abc", "sk-abc"),
        ("BEARER sk-abc", "sk-abc"),
        ("Bearer    sk-abc  ", "sk-abc"),
        ("Bearer sk-abc\t", "sk-abc"),
        ("Bearer ", ""),
        ("Bearer", ""),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer-ish sk-abc", None),
        (" Bearer sk-abc", None),
        ("", None),
        (None, None),
        ("Bearer clé-été", "clé-été"),
    ],
)
def test_bearer_token(value: str | None, token: str | None) -> None:
    assert bearer_token(value) == token


def test_the_authorization_header_is_read_case_insensitively() -> None:
    assert api_key(CIMultiDict({"authorization": "bearer sk-abc"})) == "sk-abc"


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({}, None),
        ({"x-api-key": "sk-x"}, "sk-x"),
        ({"api-key": " sk-a "}, "sk-a"),
        ({"x-api-key": "sk-x", "api-key": "sk-a"}, "sk-x"),
        ({"x-api-key": "", "api-key": "sk-a"}, "sk-a"),
        ({"x-api-key": "  "}, None),
        # Authorization wins, and another scheme is an empty key, not a missing one.
        ({"Authorization": "Bearer sk-b", "x-api-key": "sk-x"}, "sk-b"),
        ({"Authorization": "Basic dXNlcjpwYXNz", "x-api-key": "sk-x"}, ""),
        ({"Authorization": ""}, ""),
    ],
)
def test_api_key(headers: dict[str, str], key: str | None) -> None:
    assert api_key(CIMultiDict(headers)) == key


@pytest.mark.parametrize(
    ("secret", "ok"),
    [
        ("sk-abc", True),
        ("", False),
        ("clé", False),
        ("sk-\x00abc", False),
        ("sk abc\n", False),
        ("x" * MAX_API_KEY_CHARS, True),
        ("x" * (MAX_API_KEY_CHARS + 1), False),
    ],
)
def test_plausible_with_the_api_key_bound(secret: str, ok: bool) -> None:
    assert plausible(secret, MAX_API_KEY_CHARS) is ok


def test_plausible_without_a_bound_takes_a_long_secret() -> None:
    assert plausible("x" * 10_000)
    assert not plausible("")
