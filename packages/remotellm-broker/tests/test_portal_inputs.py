"""Hostile input to the portal: bodies that would pin memory, forms and query strings that
are not what its pages send. Raw sockets where a client library would tidy the attack up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from portal_rig import Browser, PortalRig, running_portal
from remotellm_broker.portal import forms
from remotellm_broker.portal.sessions import COOKIE_NAME

BIG = 8 * 1024 * 1024
ANSWER_WITHIN_S = 10.0


async def _raw(
    rig: PortalRig,
    head: str,
    body: bytes = b"",
    *,
    later: bytes = b"",
    wait_s: float = ANSWER_WITHIN_S,
) -> tuple[int, bytes]:
    """Send ``head`` and ``body`` (not necessarily all of what Content-Length promises), then
    ``later`` once the handler runs, and return the status line's code and the whole answer."""
    port = int(rig.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        if later:
            await asyncio.sleep(0.2)  # let the handler start reading the body first
            writer.write(later)
            await writer.drain()
        async with asyncio.timeout(wait_s):
            status_line = await reader.readline()
            rest = await reader.read(65536)
    finally:
        writer.close()
    return int(status_line.split()[1]), status_line + rest


async def _signed_in(rig: PortalRig) -> tuple[Browser, str, str]:
    browser = rig.browser()
    assert (await browser.login()).key() is not None
    csrf = (await browser.get("/")).csrf()
    cookie = browser.cookie_value(COOKIE_NAME)
    assert csrf is not None
    assert cookie is not None
    return browser, csrf, cookie


@pytest.mark.parametrize("path", ["/auth/rotate", "/auth/logout"])
async def test_unauthenticated_post_is_answered_before_its_body_is_read(
    tmp_path: Path, path: str
) -> None:
    """Attacker: no session, promises 8 MiB and sends a few bytes. Today the portal waits for
    (and buffers) the whole body before checking anything; 24 such connections pinned 365 MiB."""
    async with running_portal(tmp_path) as rig:
        head = (
            f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/x-www-form-urlencoded\n"
            f"Content-Length: {BIG}\n"
        )
        status, _ = await _raw(rig, head, b"csrf_token=")
        assert status in (303, 403)


async def test_a_members_oversized_form_gets_413_without_being_read(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        _, _, cookie = await _signed_in(rig)
        head = (
            "POST /auth/rotate HTTP/1.1\nHost: x\nContent-Type: application/x-www-form-urlencoded"
            f"\nCookie: {COOKIE_NAME}={cookie}\nContent-Length: {BIG}\n"
        )
        status, answer = await _raw(rig, head, b"csrf_token=")
        assert status == 413
        assert b"The form is too large" in answer


async def test_a_chunked_form_over_the_limit_gets_413(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        _, csrf, cookie = await _signed_in(rig)
        head = (
            "POST /auth/rotate HTTP/1.1\nHost: x\nContent-Type: application/x-www-form-urlencoded"
            f"\nCookie: {COOKIE_NAME}={cookie}\nTransfer-Encoding: chunked\n"
        )
        filler = f"csrf_token={csrf}&pad={'a' * (forms.FORM_MAX_BYTES + 10)}".encode()
        chunk = f"{len(filler):x}\r\n".encode() + filler + b"\r\n"  # no final chunk: more "to come"
        status, _ = await _raw(rig, head, chunk)
        assert status == 413
        assert rig.store.get_user("gitlab:101") is not None


async def test_a_form_whose_chunked_framing_breaks_midway_gets_a_4xx_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp's parser rejects the broken chunk without waking the reading handler, so the
    read deadline answers it (408): a bounded wait and a page, never a 500."""
    monkeypatch.setattr(forms, "FORM_READ_TIMEOUT_S", 1.0)
    async with running_portal(tmp_path) as rig:
        _, _, cookie = await _signed_in(rig)
        head = (
            "POST /auth/rotate HTTP/1.1\nHost: x\nContent-Type: application/x-www-form-urlencoded"
            f"\nCookie: {COOKIE_NAME}={cookie}\nTransfer-Encoding: chunked\n"
        )
        with capture_logs() as logs:
            status, answer = await _raw(rig, head, b"5\r\ncsrf_\r\n", later=b"zz\r\nx\r\n")
        assert status in (400, 408), answer[:300]
        assert b"<!doctype html>" in answer.lower()  # the portal's page, not a traceback
        assert not [e for e in logs if e.get("log_level") in ("error", "critical")]


async def test_a_members_form_dribbled_slowly_gets_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forms, "FORM_READ_TIMEOUT_S", 0.5)
    async with running_portal(tmp_path) as rig:
        _, _, cookie = await _signed_in(rig)
        head = (
            "POST /auth/rotate HTTP/1.1\nHost: x\nContent-Type: application/x-www-form-urlencoded"
            f"\nCookie: {COOKIE_NAME}={cookie}\nContent-Length: 100\n"
        )
        status, answer = await _raw(rig, head, b"csrf_token=")
        assert status == 408
        assert b"took too long" in answer


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),  # no boundary
        ("multipart/form-data; boundary=x", b"--x\r\nbroken"),
        ("application/x-www-form-urlencoded", b"csrf_token=%ff%fe"),  # not UTF-8
        ("application/x-www-form-urlencoded", b"csrf_token=\xff"),  # raw non-ASCII
        ("application/x-www-form-urlencoded", b"csrf_token=a&csrf_token=b"),
        ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % i for i in range(40))),
        ("application/json", b'{"csrf_token": "x"}'),
    ],
)
async def test_a_malformed_form_gets_a_400_page_and_a_warning(
    tmp_path: Path, content_type: str, body: bytes
) -> None:
    async with running_portal(tmp_path) as rig:
        _, _, cookie = await _signed_in(rig)
        head = (
            f"POST /auth/rotate HTTP/1.1\nHost: x\nContent-Type: {content_type}\n"
            f"Cookie: {COOKIE_NAME}={cookie}\nContent-Length: {len(body)}\n"
        )
        with capture_logs() as logs:
            status, answer = await _raw(rig, head, body)
        assert status == 400, answer[:300]
        assert b"Bad request" in answer
        assert b"Traceback" not in answer
        warnings = [e for e in logs if e["event"] == "portal_bad_request"]
        assert len(warnings) == 1
        assert warnings[0]["log_level"] == "warning"
        assert not [e for e in logs if e.get("log_level") in ("error", "critical")]


@pytest.mark.parametrize(
    "query",
    [
        "state=%ff%fe&code=x",  # bad UTF-8 after decoding
        "state=a&state=b&code=x",
        "state=%00&code=x",
        "&".join(f"f{i}=1" for i in range(40)),
    ],
)
async def test_a_malformed_callback_query_gets_a_400_page_and_a_warning(
    tmp_path: Path, query: str
) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        await browser.start_login()  # a pending login in the session
        cookie = browser.cookie_value(COOKIE_NAME)
        head = f"GET /auth/callback?{query} HTTP/1.1\nHost: x\nCookie: {COOKIE_NAME}={cookie}\n"
        with capture_logs() as logs:
            status, answer = await _raw(rig, head)
        assert status == 400, answer[:300]
        assert b"Traceback" not in answer
        assert [e for e in logs if e["event"] in ("portal_bad_request", "portal_callback_rejected")]
        assert not [e for e in logs if e.get("log_level") in ("error", "critical")]
        assert rig.fake.token_requests == []  # nothing reached GitLab
