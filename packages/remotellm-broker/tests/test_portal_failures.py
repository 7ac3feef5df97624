"""Blocked users, GitLab down or refusing, and a broker without the portal configured."""

from __future__ import annotations

from pathlib import Path

from fake_gitlab import GitLabUser
from portal_rig import running_portal


async def test_a_pre_blocked_username_gets_the_blocked_page_and_no_key(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        rig.store.block("mallory")  # operator: before mallory ever logged in
        rig.fake.user = GitLabUser(7, "mallory", "Mallory")
        browser = rig.browser()

        page = await browser.login()

        assert page.status == 403
        assert "Access blocked" in page.text
        assert "@mallory" in page.text
        assert page.key() is None
        user = rig.store.get_user("gitlab:7")
        assert user is not None
        assert user.blocked
        assert not user.has_key
        home = await browser.get("/")
        assert "Log in with GitLab" in home.text  # not signed in


async def test_a_user_blocked_after_login_loses_the_portal_and_the_key(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        key = (await browser.login()).key()
        token = (await browser.get("/")).csrf()
        assert key is not None
        assert token is not None

        rig.store.block("ada")

        identity = rig.store.authenticate(key)
        assert identity is None or identity.blocked  # the API answers 403 from now on
        rotate = await browser.post("/auth/rotate", {"csrf_token": token})
        assert rotate.status == 403
        assert "Access blocked" in rotate.text
        assert rotate.key() is None
        home = await browser.get("/")
        assert "Log in with GitLab" in home.text


async def test_gitlab_down_at_login_shows_the_error_page(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        key = (await rig.browser().login()).key()
        assert key is not None
        rig.fake.down = True

        page = await rig.browser().get("/auth/login")

        assert page.status == 502
        assert "GitLab is not answering" in page.text
        assert "keeps working" in page.text
        assert rig.store.authenticate(key) is not None


async def test_gitlab_refusing_connections_shows_the_error_page(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        await rig.fake.stop()  # the port is closed now: connection refused

        page = await rig.browser().get("/auth/login")

        assert page.status == 502
        assert "GitLab is not answering" in page.text


async def test_gitlab_going_down_during_the_login_shows_the_error_page(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())
        rig.fake.down = True

        page = await browser.get(callback)

        assert page.status == 502
        assert "GitLab is not answering" in page.text
        assert page.key() is None
        assert rig.store.list_users() == []


async def test_gitlab_rejecting_the_client_secret_shows_the_error_page(tmp_path: Path) -> None:
    async with running_portal(tmp_path, gitlab_client_secret="not-the-secret") as rig:
        page = await rig.browser().login()

        assert page.status == 502
        assert "GitLab refused the login (invalid_client)" in page.text
        assert rig.fake.token_requests[0].status == 401
        assert rig.store.list_users() == []


async def test_an_expired_code_shows_the_error_page(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())
        rig.fake.expire_codes()

        page = await browser.get(callback)

        assert page.status == 502
        assert "invalid_grant" in page.text
        assert page.key() is None


async def test_the_pkce_verifier_is_what_gitlab_checks(tmp_path: Path) -> None:
    """The fake GitLab rejects a token request whose verifier does not hash to the challenge;
    tamper with the challenge on the way to GitLab and the login must fail."""
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        authorize_url = await browser.start_login()
        tampered = authorize_url.replace("code_challenge=", "code_challenge=A", 1)

        page = await browser.get(await browser.authorize(tampered))

        assert page.status == 502
        assert rig.fake.token_requests[0].status == 400
        assert rig.store.list_users() == []


async def test_the_portal_is_off_with_a_clear_page_without_gitlab_settings(tmp_path: Path) -> None:
    async with running_portal(
        tmp_path, gitlab_client_id=None, gitlab_client_secret=None, session_secret=None
    ) as rig:
        browser = rig.browser()
        home = await browser.get("/")
        assert home.status == 200
        assert "Self-service keys are not set up here" in home.text
        assert "Ask the broker's operator" in home.text
        login = await browser.get("/auth/login")
        assert login.status == 404
        assert "not set up here" in login.text
        assert rig.fake.authorize_requests == []


async def test_the_portal_is_off_without_a_public_url(tmp_path: Path) -> None:
    async with running_portal(tmp_path, public_url=None) as rig:
        page = await rig.browser().get("/")
        assert "Self-service keys are not set up here" in page.text
