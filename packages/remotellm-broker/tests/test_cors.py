"""CORS on the API routes: preflights, grants, and what an unlisted origin (or the default,
no origin at all) gets. The browser itself is in test_cors_browser."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker_rig import running_broker
from remotellm_broker.config import ConfigError, load_settings

ORIGIN = "http://127.0.0.1:5173"


def preflight(method: str = "POST", headers: str = "authorization, content-type") -> dict[str, str]:
    return {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_preflight_for_a_listed_origin_grants_the_api_headers(tmp_path: Path) -> None:
    async with running_broker(tmp_path, cors_allow_origins=[ORIGIN]) as rig:
        asked = (
            "authorization, x-api-key, anthropic-version, anthropic-beta, content-type, "
            "x-stainless-os, x-stainless-retry-count, cookie, x-evil"
        )
        for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/models"):
            async with rig.http.options(rig.url + path, headers=preflight("POST", asked)) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
                allowed = r.headers["Access-Control-Allow-Headers"].split(", ")
                assert "Access-Control-Allow-Credentials" not in r.headers
                assert "Origin" in r.headers.getall("Vary")
        assert allowed == [
            "authorization",
            "x-api-key",
            "anthropic-version",
            "anthropic-beta",
            "content-type",
            "x-stainless-os",
            "x-stainless-retry-count",
        ]
        assert "POST" in r.headers["Access-Control-Allow-Methods"]


async def test_responses_to_a_listed_origin_expose_the_useful_headers(tmp_path: Path) -> None:
    async with running_broker(tmp_path, cors_allow_origins=[ORIGIN]) as rig:
        headers = {**rig.auth, "Origin": ORIGIN}
        async with rig.http.get(rig.url + "/v1/models", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
            exposed = resp.headers["Access-Control-Expose-Headers"]
        for name in ("x-request-id", "retry-after", "x-ratelimit-remaining-requests"):
            assert name in exposed
        # errors too: a page must be able to read why it was refused
        async with rig.http.get(rig.url + "/v1/models", headers={"Origin": ORIGIN}) as resp:
            assert resp.status == 401
            assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_an_unlisted_origin_gets_no_grant_and_its_preflight_is_refused(
    tmp_path: Path,
) -> None:
    async with running_broker(tmp_path, cors_allow_origins=[ORIGIN]) as rig:
        evil = {**preflight(), "Origin": "http://127.0.0.1:6666"}
        async with rig.http.options(rig.url + "/v1/chat/completions", headers=evil) as resp:
            assert resp.status == 403
            assert "Access-Control-Allow-Origin" not in resp.headers
        for origin in ("http://127.0.0.1:6666", "null", ORIGIN + ".evil.example", ORIGIN + "/"):
            async with rig.http.get(
                rig.url + "/v1/models", headers={**rig.auth, "Origin": origin}
            ) as resp:
                assert resp.status == 200
                assert not [h for h in resp.headers if h.lower().startswith("access-control")]


async def test_the_relay_and_the_portal_are_never_granted(tmp_path: Path) -> None:
    async with running_broker(tmp_path, cors_allow_origins=["*"]) as rig:
        async with rig.http.get(rig.url + "/", headers={"Origin": ORIGIN}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with rig.http.options(rig.url + "/v1/relay", headers=preflight("GET")) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with rig.http.options(rig.url + "/v1/models", headers=preflight("GET")) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN  # "*": any origin


async def test_by_default_no_origin_is_granted(tmp_path: Path) -> None:
    async with running_broker(tmp_path) as rig:
        async with rig.http.options(rig.url + "/v1/models", headers=preflight("GET")) as resp:
            assert resp.status == 405
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with rig.http.get(
            rig.url + "/v1/models", headers={**rig.auth, "Origin": ORIGIN}
        ) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers


def test_origins_come_from_env_yaml_or_flag_and_bad_ones_stop_start_up(tmp_path: Path) -> None:
    env = {"REMOTELLM_BROKER_CORS_ALLOW_ORIGINS": "http://127.0.0.1:5173, https://app.example"}
    assert load_settings(None, env, {}).cors_allow_origins == [
        "http://127.0.0.1:5173",
        "https://app.example",
    ]
    config = tmp_path / "broker.yaml"
    config.write_text("cors_allow_origins: ['http://[::1]:3000']\n")
    assert load_settings(config, {}, {}).cors_allow_origins == ["http://[::1]:3000"]
    assert load_settings(None, {}, {"cors_allow_origins": "*"}).cors_allow_origins == ["*"]
    assert load_settings(None, {}, {}).cors_allow_origins == []
    for bad in ("http://a.example/path", "javascript:alert(1)", "a.example", "http://a b"):
        with pytest.raises(ConfigError, match="cors_allow_origins"):
            load_settings(None, {}, {"cors_allow_origins": bad})
