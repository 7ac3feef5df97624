"""Redirects, cookies, CSRF, escaping and page headers of the portal."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from fake_gitlab import GitLabUser
from portal_rig import SESSION_SECRET, running_portal
from remotellm_broker.portal.sessions import COOKIE_NAME, SESSION_MAX_AGE_S, fernet_from_secret


def _cookie_header(headers: object) -> str:
    values = [v for v in headers.getall("Set-Cookie", []) if v.startswith(f"{COOKIE_NAME}=")]  # type: ignore[attr-defined]
    assert len(values) == 1, values
    return str(values[0])


@pytest.mark.parametrize(
    "path",
    [
        "/auth/login?next=https://evil.example/",
        "/auth/login?redirect_uri=https://evil.example/cb",
        "/auth/login?return_to=//evil.example",
    ],
)
async def test_login_only_ever_redirects_to_the_configured_gitlab(
    tmp_path: Path, path: str
) -> None:
    async with running_portal(tmp_path) as rig:
        page = await rig.browser().get(path)

        assert page.status == 302
        assert page.location.startswith(f"{rig.fake.url}/oauth/authorize?")
        query = parse_qs(urlsplit(page.location).query)
        assert query["redirect_uri"] == [f"{rig.url}/auth/callback"]
        assert "evil" not in page.location


async def test_a_forged_host_header_does_not_change_the_redirect_uri(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        page = await rig.browser().get(
            "/auth/login", headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
        )
        assert page.status == 302
        assert "evil" not in page.location
        assert parse_qs(urlsplit(page.location).query)["redirect_uri"] == [
            f"{rig.url}/auth/callback"
        ]


@pytest.mark.parametrize(
    "extra", ["&next=https://evil.example/", "&next=//evil.example", "&next=/\\evil.example"]
)
async def test_after_login_the_browser_goes_nowhere_a_parameter_names(
    tmp_path: Path, extra: str
) -> None:
    async with running_portal(tmp_path) as rig:
        await rig.browser().login()  # make the user a returning one: the callback redirects
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())

        page = await browser.get(callback + extra)

        assert page.status == 303
        assert page.location == "/"


async def test_logout_redirects_home_whatever_it_is_asked(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        await browser.login()
        token = (await browser.get("/")).csrf()
        assert token is not None
        page = await browser.post(
            "/auth/logout?next=https://evil.example/", {"csrf_token": token, "next": "//evil"}
        )
        assert page.status == 303
        assert page.location == "/"


async def test_the_session_cookie_is_httponly_lax_and_expires(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        page = await rig.browser().get("/auth/login")
        header = _cookie_header(page.headers)
        attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
        assert "httponly" in attributes
        assert re.search(r";\s*SameSite=Lax", header, re.IGNORECASE)
        assert re.search(rf";\s*Max-Age={SESSION_MAX_AGE_S}\b", header, re.IGNORECASE)
        assert re.search(r";\s*Path=/(;|$)", header)
        assert "secure" not in attributes  # public URL is http: a Secure cookie would be lost


async def test_the_session_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    async with running_portal(tmp_path, scheme="https") as rig:
        page = await rig.browser().get("/auth/login")
        header = _cookie_header(page.headers)
        assert re.search(r";\s*Secure(;|$)", header, re.IGNORECASE)
        assert re.search(r";\s*HttpOnly(;|$)", header, re.IGNORECASE)


async def test_the_session_is_new_after_login_and_never_holds_the_key(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        callback = await browser.authorize(await browser.start_login())
        before = browser.cookie_value(COOKIE_NAME)
        page = await browser.get(callback)
        after = browser.cookie_value(COOKIE_NAME)
        key = page.key()
        assert key is not None
        assert before is not None
        assert after is not None
        assert before != after

        fernet = fernet_from_secret(SESSION_SECRET)
        before_data = json.loads(fernet.decrypt(before.encode()))
        after_data = json.loads(fernet.decrypt(after.encode()))
        assert set(before_data["session"]) == {"login"}
        assert set(after_data["session"]) == {"uid", "csrf", "ep"}  # nothing from before survives
        assert after_data["session"]["uid"] == "gitlab:101"
        assert key not in json.dumps(after_data)
        assert key[3:] not in json.dumps(after_data)


async def test_a_tampered_cookie_is_just_a_new_session(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        await browser.login()
        cookie = browser.cookie_value(COOKIE_NAME)
        assert cookie is not None
        forged = rig.browser()
        forged.jar.update_cookies({COOKIE_NAME: cookie[:-4] + "AAAA"})
        page = await forged.get("/")
        assert page.status == 200
        assert "Log in with GitLab" in page.text


@pytest.mark.parametrize(
    "form",
    [{}, {"csrf_token": ""}, {"csrf_token": "guess"}],
    ids=["missing", "empty", "wrong"],
)
async def test_rotate_without_the_csrf_token_changes_nothing(
    tmp_path: Path, form: dict[str, str]
) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        key = (await browser.login()).key()
        assert key is not None

        page = await browser.post("/auth/rotate", form)

        assert page.status == 403
        assert page.key() is None
        assert rig.store.authenticate(key) is not None


async def test_rotate_with_another_sessions_csrf_token_changes_nothing(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        mine, theirs = rig.browser(), rig.browser()
        key = (await mine.login()).key()
        await theirs.login()
        their_token = (await theirs.get("/")).csrf()
        assert key is not None
        assert their_token is not None

        page = await mine.post("/auth/rotate", {"csrf_token": their_token})

        assert page.status == 403
        assert rig.store.authenticate(key) is not None


async def test_rotate_from_a_foreign_origin_is_refused(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        key = (await browser.login()).key()
        token = (await browser.get("/")).csrf()
        assert key is not None
        assert token is not None

        page = await browser.post(
            "/auth/rotate", {"csrf_token": token}, headers={"Origin": "https://evil.example"}
        )

        assert page.status == 403
        assert rig.store.authenticate(key) is not None


async def test_rotate_without_a_session_is_refused(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        page = await rig.browser().post("/auth/rotate", {"csrf_token": "x"})
        assert page.status == 403
        assert page.key() is None


async def test_a_script_in_the_gitlab_name_is_shown_as_text(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        rig.fake.user = GitLabUser(666, "mallory", '<script>alert("pwned")</script><img src=x>')
        browser = rig.browser()
        await browser.login()
        token = (await browser.get("/")).csrf()
        assert token is not None
        pages = [await browser.get("/"), await browser.post("/auth/rotate", {"csrf_token": token})]
        for page in pages:
            assert page.status == 200
            assert "<script>alert" not in page.text
            assert "<img src=x>" not in page.text
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in pages[0].text


async def test_pages_load_nothing_from_elsewhere_and_forbid_framing(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        pages = [await browser.get("/"), await browser.login(), await browser.get("/")]
        for page in pages:
            csp = page.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp
            assert "frame-ancestors 'none'" in csp
            assert page.headers["Cache-Control"] == "no-store"
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            nonce = re.search(r"'nonce-([^']+)'", csp)
            assert nonce is not None
            assert f'<style nonce="{nonce.group(1)}">' in page.text
            assert not re.search(r' src=(?!"/[^/])', page.text)  # only same-origin paths
            assert "<link" not in page.text
            assert " style=" not in page.text  # inline style attributes would break the CSP
            assert " onclick=" not in page.text
