"""The portal's happy paths end to end: fake GitLab on loopback, real app, real cookies."""

from __future__ import annotations

from pathlib import Path

from fake_gitlab import GitLabUser
from portal_rig import running_portal
from remotellm_broker.keys import display_prefix


async def test_first_login_creates_the_user_and_shows_a_working_key_once(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        login = await browser.get("/")
        assert login.status == 200
        assert "Log in with GitLab" in login.text
        assert 'href="/auth/login"' in login.text

        page = await browser.login()

        assert page.status == 200, page.text
        key = page.key()
        assert key is not None
        assert f"{rig.url}/v1" in page.text
        assert "OpenAI Compatible" in page.text
        assert "from openai import OpenAI" in page.text
        assert f"curl {rig.url}/v1/chat/completions" in page.text
        assert 'data-copy="api-key"' in page.text
        identity = rig.store.authenticate(key)
        assert identity is not None
        assert identity.user_id == "gitlab:101"
        user = rig.store.get_user("gitlab:101")
        assert user is not None
        assert user.name == "ada"
        assert user.display_name == "Ada Lovelace"
        assert user.gitlab_id == 101
        assert user.key_prefix == display_prefix(key)
        assert user.last_login is not None

        # The key is never shown again: the next visit shows only its prefix.
        again = await browser.get("/")
        assert again.status == 200
        assert key not in again.text
        assert display_prefix(key) in again.text
        assert "Rotate key" in again.text


async def test_the_token_request_carries_pkce_and_the_registered_redirect(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        authorize_url = await browser.start_login()
        assert authorize_url.startswith(f"{rig.fake.url}/oauth/authorize?")
        await browser.get(await browser.authorize(authorize_url))

        asked = rig.fake.authorize_requests[-1]
        assert asked["response_type"] == "code"
        assert asked["scope"] == "openid"
        assert asked["code_challenge_method"] == "S256"
        assert len(asked["code_challenge"]) == 43
        assert asked["redirect_uri"] == f"{rig.url}/auth/callback"
        assert len(asked["state"]) >= 20
        (token_request,) = rig.fake.token_requests
        assert token_request.status == 200
        assert token_request.form["grant_type"] == "authorization_code"
        assert token_request.form["redirect_uri"] == f"{rig.url}/auth/callback"
        assert 43 <= len(token_request.form["code_verifier"]) <= 128
        assert rig.fake.user_requests == 1


async def test_returning_user_keeps_the_key_and_sees_its_prefix(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        first = await rig.browser().login()
        key = first.key()
        assert key is not None

        rig.fake.user = GitLabUser(101, "ada.l", "Ada King")  # renamed in GitLab meanwhile
        page = await rig.browser().login()

        assert page.status == 303
        assert page.location == "/"
        assert page.key() is None
        user = rig.store.get_user("gitlab:101")
        assert user is not None
        assert user.name == "ada.l"
        assert user.display_name == "Ada King"
        assert rig.store.authenticate(key) is not None  # logging in again changes nothing


async def test_returning_user_lands_on_the_account_page(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        key = (await rig.browser().login()).key()
        assert key is not None
        browser = rig.browser()
        assert (await browser.login()).status == 303
        home = await browser.get("/")
        assert home.status == 200
        assert "Welcome, Ada Lovelace" in home.text
        assert display_prefix(key) in home.text
        assert key not in home.text


async def test_rotate_issues_a_new_key_and_the_old_one_stops_at_once(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        old_key = (await browser.login()).key()
        assert old_key is not None
        home = await browser.get("/")
        token = home.csrf()
        assert token is not None

        page = await browser.post("/auth/rotate", {"csrf_token": token})

        assert page.status == 200
        new_key = page.key()
        assert new_key is not None
        assert new_key != old_key
        assert "Your new API key" in page.text
        assert "previous key has stopped working" in page.text
        assert rig.store.authenticate(old_key) is None
        assert rig.store.authenticate(new_key) is not None


async def test_logout_ends_the_session(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        await browser.login()
        home = await browser.get("/")
        token = home.csrf()
        assert token is not None

        out = await browser.post("/auth/logout", {"csrf_token": token})

        assert out.status == 303
        assert out.location == "/"
        after = await browser.get("/")
        assert "Log in with GitLab" in after.text
        refused = await browser.post("/auth/rotate", {"csrf_token": token})
        assert refused.status == 403
        assert refused.key() is None
