"""The callback refuses every state that is not this browser's pending one, before any token
request reaches GitLab; and the pending state itself works once and expires."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from aiohttp_session import Session
from yarl import URL

from portal_rig import running_portal
from remotellm_broker.portal.oauth import PendingLogin
from remotellm_broker.portal.sessions import (
    COOKIE_NAME,
    LOGIN_TTL_S,
    SpentStates,
    remember_pending,
    take_pending,
)


def _with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return parts._replace(query=urlencode(query)).geturl()


def _assert_refused(page_status: int, text: str) -> None:
    assert page_status == 400
    assert "This login link is not valid" in text
    assert "sk-" not in text


@pytest.mark.parametrize(
    ("change", "value"),
    [("state", None), ("state", ""), ("state", "not-the-state"), ("state", "x" * 4000)],
    ids=["missing", "empty", "wrong", "huge"],
)
async def test_callback_with_a_bad_state_is_refused_before_any_token_request(
    tmp_path: Path, change: str, value: str | None
) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())

        page = await browser.get(_with_query(callback, **{change: value}))

        _assert_refused(page.status, page.text)
        assert rig.fake.token_requests == []
        assert rig.store.list_users() == []


async def test_the_state_is_spent_even_when_the_callback_was_refused(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())
        await browser.get(_with_query(callback, state="wrong"))

        page = await browser.get(callback)  # now with the right state: too late

        _assert_refused(page.status, page.text)
        assert rig.fake.token_requests == []


async def test_replaying_a_used_callback_is_refused(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())
        assert (await browser.get(callback)).status == 200

        page = await browser.get(callback)

        _assert_refused(page.status, page.text)
        assert len(rig.fake.token_requests) == 1


async def test_replaying_with_the_cookie_from_before_the_callback_is_refused(
    tmp_path: Path,
) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())
        pending_cookie = browser.cookie_value(COOKIE_NAME)
        assert pending_cookie is not None
        assert (await browser.get(callback)).status == 200

        thief = rig.browser()
        thief.jar.update_cookies({COOKIE_NAME: pending_cookie}, URL(rig.url))
        page = await thief.get(callback)

        _assert_refused(page.status, page.text)
        assert len(rig.fake.token_requests) == 1


async def test_a_state_from_another_browsers_login_is_refused(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        victim, attacker = rig.browser(), rig.browser()
        await victim.start_login()
        attackers_callback = await attacker.authorize(await attacker.start_login())

        page = await victim.get(attackers_callback)  # login CSRF: the attacker's code and state

        _assert_refused(page.status, page.text)
        assert rig.fake.token_requests == []
        # The attacker's own browser can still finish its own login.
        assert (await attacker.get(attackers_callback)).status == 200


async def test_a_callback_without_any_session_is_refused(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        starter = rig.browser()
        callback = await starter.authorize(await starter.start_login())

        page = await rig.browser().get(callback)

        _assert_refused(page.status, page.text)
        assert rig.fake.token_requests == []


async def test_a_callback_without_a_code_is_refused(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())

        page = await browser.get(_with_query(callback, code=None))

        _assert_refused(page.status, page.text)
        assert rig.fake.token_requests == []


async def test_cancelling_in_gitlab_shows_a_page_and_asks_for_no_token(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        rig.fake.approval = "deny"
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())
        assert "error=access_denied" in callback

        page = await browser.get(callback)

        assert page.status == 403
        assert "Login cancelled" in page.text
        assert rig.fake.token_requests == []


async def test_an_error_callback_with_a_foreign_state_is_a_bad_state(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        await browser.start_login()
        page = await browser.get("/auth/callback?error=access_denied&state=forged")
        _assert_refused(page.status, page.text)


def _session() -> Session:
    return Session(None, data=None, new=True)


def test_a_pending_login_is_taken_once() -> None:
    session = _session()
    remember_pending(
        session, PendingLogin(state="s" * 30, code_verifier="v" * 64, started_at=100.0)
    )
    taken = take_pending(session, now=101.0)
    assert taken == PendingLogin(state="s" * 30, code_verifier="v" * 64, started_at=100.0)
    assert take_pending(session, now=101.0) is None


@pytest.mark.parametrize("age", [LOGIN_TTL_S + 1, -5.0])
def test_a_stale_or_future_pending_login_is_ignored(age: float) -> None:
    session = _session()
    remember_pending(
        session, PendingLogin(state="s" * 30, code_verifier="v" * 64, started_at=1000.0)
    )
    assert take_pending(session, now=1000.0 + age) is None


def test_a_garbled_pending_login_is_ignored() -> None:
    session = _session()
    session["login"] = {"state": 5, "verifier": None, "at": "yesterday"}
    assert take_pending(session, now=0.0) is None


def test_spent_states_refuse_a_second_use_until_they_age_out() -> None:
    spent = SpentStates(ttl_s=10.0, max_entries=3)
    assert spent.spend("a", now=0.0)
    assert not spent.spend("a", now=5.0)
    assert spent.spend("a", now=11.0)  # older than any pending login could be


def test_spent_states_stay_bounded() -> None:
    spent = SpentStates(ttl_s=1000.0, max_entries=3)
    for state in "abcd":
        assert spent.spend(state, now=0.0)
    assert spent.spend("a", now=1.0)  # "a" was pushed out to stay within three entries
