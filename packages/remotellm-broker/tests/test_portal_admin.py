"""The usage page and the admin page over HTTP: who may see what, and every admin action
through the CLI's code, CSRF-checked and logged. (The browser walk is in
test_portal_usage_browser.py.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from structlog.testing import capture_logs

from broker_rig import wait_for
from connector_peer import ConnectorPeer, serve_sse, stall
from fake_gitlab import GitLabUser
from portal_rig import Browser, PortalRig, running_portal
from remotellm_broker.app import BROKER
from remotellm_protocol import Usage

ADA = 101  # the fake GitLab's default user


@asynccontextmanager
async def portal(tmp_path: Path, **settings: object) -> AsyncIterator[PortalRig]:
    async with running_portal(tmp_path, **settings) as rig:
        yield rig


async def signed_in(rig: PortalRig, user: GitLabUser | None = None) -> tuple[Browser, str]:
    """A browser logged in as ``user`` (default ada) and that user's API key."""
    if user is not None:
        rig.fake.user = user
    browser = rig.browser()
    page = await browser.login()
    key = page.key()
    assert key is not None, page.text
    return browser, key


async def chat(rig: PortalRig, key: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            rig.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        ) as resp,
    ):
        await resp.read()
        return resp.status


async def test_the_usage_page_shows_my_tokens_quotas_and_limits(tmp_path: Path) -> None:
    async with portal(
        tmp_path, quota_daily_tokens=100, rate_limit_rpm=90, usage_flush_interval_s=0.05
    ) as rig:
        token = rig.store.create_connector_token("gpu")
        usage = Usage(prompt_tokens=5, completion_tokens=3)
        peer = ConnectorPeer(rig.relay_url, token, name="gpu", script=serve_sse(3, usage=usage))
        await peer.connect()
        try:
            browser, key = await signed_in(rig)
            for _ in range(3):
                assert await chat(rig, key) == 200
            # The chart reads the database: records land there within the flush interval.
            for _ in range(100):
                page = await browser.get("/account/usage")
                if "Your usage: 24 tokens" in page.text:
                    break
                await asyncio.sleep(0.05)
        finally:
            await peer.close()
    assert page.status == 200
    assert '<svg viewBox="0 0 720 200"' in page.text
    assert "Your usage: 24 tokens over the last 30 days" in page.text
    assert re.search(r"24 of 100 tokens used; resets \d{4}-\d\d-\d\d 00:00 UTC", page.text)
    assert "no quota (24 tokens used)" in page.text  # monthly: none by default
    assert "90 per minute" in page.text
    assert 'id="admin-link"' not in page.text
    assert "script" not in page.text.split("<footer>")[0].split("</style>")[1]


async def test_the_usage_page_needs_a_login(tmp_path: Path) -> None:
    async with portal(tmp_path) as rig:
        page = await rig.browser().get("/account/usage")
        chart = await rig.browser().get("/account/usage.svg")
    assert page.status == 303
    assert page.location == "/"
    assert chart.status == 403


async def test_the_account_page_shows_the_chart_as_a_same_origin_svg_image(
    tmp_path: Path,
) -> None:
    async with portal(tmp_path) as rig:
        browser, _ = await signed_in(rig)
        account = await browser.get("/")
        chart = await browser.get("/account/usage.svg")
    assert '<img src="/account/usage.svg"' in account.text
    assert chart.status == 200
    assert chart.headers["Content-Type"] == "image/svg+xml"
    assert chart.headers["X-Content-Type-Options"] == "nosniff"
    assert chart.text.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert chart.text.count("<rect ") == 30
    assert "Your usage: 0 tokens over the last 30 days" in chart.text


async def test_a_user_who_is_not_an_admin_gets_403_and_their_forms_do_nothing(
    tmp_path: Path,
) -> None:
    async with portal(tmp_path, admin_gitlab_ids=[999]) as rig:
        rig.store.add_user("victim")
        browser, _ = await signed_in(rig)
        page = await browser.get("/admin")
        assert page.status == 403
        assert "Admins only" in page.text
        csrf = (await browser.get("/")).csrf()
        assert csrf is not None
        with capture_logs() as logs:
            done = await browser.post(
                "/admin/users/block", {"csrf_token": csrf, "user_id": "local:victim"}
            )
        assert done.status == 403
        assert not rig.store.find_users("victim")[0].blocked
        assert any(e["event"] == "portal_admin_refused" for e in logs)
        assert (await rig.browser().get("/admin")).status == 303  # not signed in at all


async def test_an_admin_blocks_unblocks_and_sets_limits_through_the_user_store(
    tmp_path: Path,
) -> None:
    async with portal(tmp_path, admin_gitlab_ids=[ADA]) as rig:
        rig.store.add_user("bob")
        browser, _ = await signed_in(rig)
        page = await browser.get("/admin?q=bo")
        assert page.status == 200
        assert 'data-user="local:bob"' in page.text
        assert 'data-user="gitlab:101"' not in page.text  # filtered out by the search
        csrf = page.csrf()
        assert csrf is not None
        with capture_logs() as logs:
            done = await browser.post(
                "/admin/users/block", {"csrf_token": csrf, "user_id": "local:bob"}
            )
            assert (done.status, done.location) == (303, "/admin#users")
            assert rig.store.find_users("bob")[0].blocked
            await browser.post("/admin/users/unblock", {"csrf_token": csrf, "user_id": "local:bob"})
            assert not rig.store.find_users("bob")[0].blocked
            form = {"csrf_token": csrf, "user_id": "local:bob", "rpm": "30", "burst": "",
                    "streams": "2", "daily": "5000", "monthly": "0"}  # fmt: skip
            assert (await browser.post("/admin/users/limits", form)).status == 303
        bob = rig.store.find_users("bob")[0]
        assert (bob.rate_limit_rpm, bob.rate_limit_burst, bob.max_streams) == (30, None, 2)
        assert (bob.quota_daily_tokens, bob.quota_monthly_tokens) == (5000, 0)
        actions = [(e["action"], e["target"], e["admin"]) for e in logs
                   if e["event"] == "portal_admin_action"]  # fmt: skip
        assert actions == [
            ("block", "local:bob", "gitlab:101"),
            ("unblock", "local:bob", "gitlab:101"),
            ("limits", "local:bob", "gitlab:101"),
        ]
        bad = dict(form, rpm="-1")
        assert (await browser.post("/admin/users/limits", bad)).status == 400
        assert rig.store.find_users("bob")[0].rate_limit_rpm == 30


async def test_admin_forms_without_the_csrf_token_or_from_another_origin_are_refused(
    tmp_path: Path,
) -> None:
    async with portal(tmp_path, admin_gitlab_ids=[ADA]) as rig:
        rig.store.add_user("bob")
        browser, _ = await signed_in(rig)
        csrf = (await browser.get("/admin")).csrf()
        assert csrf is not None
        no_token = await browser.post("/admin/users/block", {"user_id": "local:bob"})
        wrong = await browser.post(
            "/admin/users/block", {"csrf_token": csrf + "x", "user_id": "local:bob"}
        )
        cross = await browser.post(
            "/admin/users/block",
            {"csrf_token": csrf, "user_id": "local:bob"},
            headers={"Origin": "https://evil.example"},
        )
        other = rig.browser()  # a second visitor with ada's token but not her cookie
        stolen = await other.post(
            "/admin/users/block", {"csrf_token": csrf, "user_id": "local:bob"}
        )
        huge = await browser.post(
            "/admin/users/block", {"csrf_token": csrf, "user_id": "local:bob", "x": "y" * 9000}
        )
        assert [p.status for p in (no_token, wrong, cross)] == [403, 403, 403]
        assert stolen.status == 303  # not signed in: sent to the login page
        assert huge.status == 413
        assert not rig.store.find_users("bob")[0].blocked


async def test_an_admin_sees_connectors_and_live_streams_and_cuts_one(tmp_path: Path) -> None:
    async with portal(tmp_path, admin_gitlab_ids=[ADA]) as rig:
        token = rig.store.create_connector_token("gpu")
        peer = ConnectorPeer(rig.relay_url, token, name="gpu", models=("m", "m2"), script=stall)
        await peer.connect()
        try:
            browser, key = await signed_in(rig)
            request = asyncio.create_task(chat(rig, key))
            state = rig.app[BROKER]
            await wait_for(lambda: len(state.live()) == 1 and peer.opens)
            page = await browser.get("/admin")
            assert "<td>gpu</td><td>m, m2</td>" in page.text
            assert '<td class="num">1 / 8</td>' in page.text
            request_id = state.live()[0].request_id
            assert f'data-request="{request_id}"' in page.text
            csrf = page.csrf()
            assert csrf is not None
            with capture_logs() as logs:
                done = await browser.post(
                    "/admin/streams/cut", {"csrf_token": csrf, "request_id": request_id}
                )
            assert done.status == 303
            assert await asyncio.wait_for(request, 10) == 499
            await wait_for(lambda: bool(peer.cancels))
            assert [e["found"] for e in logs if e["event"] == "portal_admin_action"] == [1]
        finally:
            await peer.close()


async def test_admins_by_gitlab_group_need_the_group_in_their_session(tmp_path: Path) -> None:
    from aiohttp_session import Session

    from remotellm_broker.config import BrokerSettings
    from remotellm_broker.portal.admins import is_admin, remember_groups
    from remotellm_broker.users import UserStore

    settings = BrokerSettings(admin_gitlab_groups=["acme/ops"])
    store = UserStore(tmp_path / "users.yaml")
    user = store.upsert_gitlab_user(5, "eve", "Eve")
    session = Session("id", data=None, new=True)
    assert not is_admin(settings, user, session)
    remember_groups(session, ["acme/dev"], settings.admin_gitlab_groups)
    assert not is_admin(settings, user, session)
    assert "groups" not in session  # nothing but admin groups is kept in the cookie
    remember_groups(session, ["acme/dev", "Acme/Ops"], settings.admin_gitlab_groups)
    assert is_admin(settings, user, session)
    assert session["groups"] == ["Acme/Ops"]


async def test_a_member_of_an_admin_group_logs_in_and_gets_the_admin_page(tmp_path: Path) -> None:
    async with portal(tmp_path, admin_gitlab_groups=["acme/ops"]) as rig:
        many = [f"acme/team-{i:03}" for i in range(300)]  # a cookie must not grow with these
        ops = GitLabUser(7, "opsy", "Opsy", memberships=[*many, "acme/ops"])
        admin, _ = await signed_in(rig, ops)
        assert (await admin.get("/admin")).status == 200
        cookie = admin.cookie_value("remotellm_portal") or ""
        assert len(cookie) < 2048
        other, _ = await signed_in(rig, GitLabUser(8, "dev", "Dev", memberships=["acme/dev"]))
        assert (await other.get("/admin")).status == 403
