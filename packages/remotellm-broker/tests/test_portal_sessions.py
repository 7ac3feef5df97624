"""Attacks on portal identity that outlive a moment: a blocked user renaming their GitLab
account, and a copy of a session cookie used after its owner logged out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fake_gitlab import GitLabUser
from portal_rig import running_portal
from remotellm_broker.portal.sessions import COOKIE_NAME
from remotellm_broker.userfile import read_users_file


async def test_a_pre_blocked_user_stays_blocked_after_renaming_their_gitlab_account(
    tmp_path: Path,
) -> None:
    async with running_portal(tmp_path) as rig:
        rig.store.block("mallory")  # pre-block: nobody called mallory has logged in yet
        rig.fake.user = GitLabUser(666, "mallory", "Mallory")
        first = await rig.browser().login()
        assert first.status == 403
        assert "Access blocked" in first.text
        # The pre-block now sticks to the id, not the name.
        record = rig.store.get_user("gitlab:666")
        assert record is not None
        assert record.blocked
        assert read_users_file(rig.store.path)[0].blocked_usernames == []

        rig.fake.user.username = "totally-not-mallory"  # renamed on GitLab
        again = await rig.browser().login()
        assert again.status == 403
        assert again.key() is None
        record = rig.store.get_user("gitlab:666")
        assert record is not None
        assert record.name == "totally-not-mallory"
        assert record.blocked
        # And a new account that takes the freed name is not punished for it.
        rig.fake.user = GitLabUser(777, "mallory", "Someone else")
        assert (await rig.browser().login()).key() is not None


async def test_a_block_of_a_known_user_holds_across_a_rename(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        rig.fake.user = GitLabUser(5, "trudy", "Trudy")
        assert (await rig.browser().login()).key() is not None
        rig.store.block("trudy")
        rig.fake.user.username = "trudy-renamed"
        page = await rig.browser().login()
        assert page.status == 403
        record = rig.store.get_user("gitlab:5")
        assert record is not None
        assert record.blocked


async def test_a_cookie_copied_before_logout_cannot_rotate_the_key(tmp_path: Path) -> None:
    """Attacker: copied the owner's session cookie (shared machine, stolen backup). After the
    owner logs out, the copy must not rotate the key: that would hand the attacker a working
    key and kill the owner's."""
    async with running_portal(tmp_path) as rig:
        owner = rig.browser()
        first = await owner.login()
        key = first.key()
        assert key is not None
        home = await owner.get("/")
        csrf = home.csrf()
        assert csrf is not None
        stolen = owner.cookie_value(COOKIE_NAME)
        assert stolen is not None

        out = await owner.post("/auth/logout", {"csrf_token": csrf})
        assert out.status == 303

        thief = rig.browser()
        thief.http.cookie_jar.update_cookies({COOKIE_NAME: stolen})
        rotated = await thief.post("/auth/rotate", {"csrf_token": csrf})
        assert rotated.status == 403
        assert rotated.key() is None
        assert "Log in with GitLab" in (await thief.get("/")).text
        # The owner's key still works: nothing was rotated.
        user = rig.store.get_user("gitlab:101")
        assert user is not None
        identity = rig.store.authenticate(key)
        assert identity is not None
        assert identity.user_id == "gitlab:101"

        # Logging in again gives a fresh, working session.
        assert (await owner.login()).status == 303
        assert "Rotate key" in (await owner.get("/")).text


async def test_a_cookie_from_before_logout_stays_dead_after_the_user_is_deleted_and_returns(
    tmp_path: Path,
) -> None:
    """The epoch counts from zero for a new record: the cookie must not come back to life
    when the operator deletes the user and they log in again."""
    async with running_portal(tmp_path) as rig:
        owner = rig.browser()
        await owner.login()
        csrf = (await owner.get("/")).csrf()
        assert csrf is not None
        stolen = owner.cookie_value(COOKIE_NAME)
        assert stolen is not None
        assert (await owner.post("/auth/logout", {"csrf_token": csrf})).status == 303
        rig.store.delete("gitlab:101")
        await asyncio.sleep(1.1)  # users.yaml times have one-second resolution
        assert (await rig.browser().login()).key() is not None  # a new record, epoch 0 again
        thief = rig.browser()
        thief.http.cookie_jar.update_cookies({COOKIE_NAME: stolen})
        assert (await thief.post("/auth/rotate", {"csrf_token": csrf})).status == 403


async def test_a_rotation_started_before_logout_and_finished_after_it_is_refused(
    tmp_path: Path,
) -> None:
    """Attacker with a copied cookie opens a rotate request, sends its body slowly, and
    finishes it only after the owner has logged out."""
    async with running_portal(tmp_path) as rig:
        owner = rig.browser()
        key = (await owner.login()).key()
        assert key is not None
        csrf = (await owner.get("/")).csrf()
        assert csrf is not None
        stolen = owner.cookie_value(COOKIE_NAME)
        body = f"csrf_token={csrf}".encode()
        port = int(rig.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                (
                    "POST /auth/rotate HTTP/1.1\r\nHost: x\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    f"Cookie: {COOKIE_NAME}={stolen}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body[:5]
            )
            await writer.drain()
            assert (await owner.post("/auth/logout", {"csrf_token": csrf})).status == 303
            writer.write(body[5:])
            await writer.drain()
            async with asyncio.timeout(10):
                status_line = await reader.readline()
        finally:
            writer.close()
        assert status_line.split()[1] == b"403"
        assert rig.store.authenticate(key) is not None  # the owner's key was not rotated
