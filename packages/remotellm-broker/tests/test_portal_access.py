"""Who gets a key: the operator's access rules, checked against GitLab's OIDC userinfo.

Each test plays a stranger on the configured GitLab (on gitlab.com: anyone on the internet)
logging in through the real broker app and the fake GitLab's OAuth + userinfo endpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fake_gitlab import GitLabUser
from portal_rig import running_portal
from remotellm_broker.app import create_app
from remotellm_broker.config import BrokerSettings, ConfigError
from remotellm_broker.users import UserStore

ACME_GROUPS = ["acme", "acme/team-a", "acme/team-a/infra", "acme-evil", "acmeco", "other"]


async def test_stranger_outside_the_allowed_groups_is_denied_with_a_page_and_a_log_line(
    tmp_path: Path,
) -> None:
    async with running_portal(tmp_path, portal_allowed_groups=["acme"]) as rig:
        rig.fake.groups = ACME_GROUPS
        # Lookalike group names must not pass for the allowed one.
        rig.fake.user = GitLabUser(666, "mallory", "Mallory", memberships=["acme-evil", "acmeco"])
        with capture_logs() as logs:
            page = await rig.browser().login()
        assert page.status == 403
        assert "No access to this broker" in page.text
        assert "@mallory" in page.text
        assert "not one of" in page.text
        assert page.key() is None
        assert rig.store.list_users() == []  # a stranger leaves nothing in users.yaml
        denied = [e for e in logs if e["event"] == "portal_login_denied"]
        assert len(denied) == 1
        assert denied[0]["user_id"] == "gitlab:666"
        assert denied[0]["reason"] == "not_in_allowed_groups_or_users"
        assert denied[0]["log_level"] == "warning"
        assert not any(e["event"] == "portal_key_issued" for e in logs)
        # Denied means no session either: the index is the login page again.
        home = await rig.browser().get("/")
        assert "Log in with GitLab" in home.text


@pytest.mark.parametrize(
    ("memberships", "rule"),
    [
        (["acme"], "acme"),  # direct member
        (["acme/team-a"], "acme"),  # a subgroup of the allowed group
        (["acme/team-a/infra"], "acme"),  # two levels down
        (["acme"], "acme/team-a"),  # member of the parent: GitLab lists the subgroup too
        (["ACME/Team-A"], "acme/team-a"),  # GitLab paths ignore case
    ],
)
async def test_members_of_an_allowed_group_or_its_subgroups_get_a_key(
    tmp_path: Path, memberships: list[str], rule: str
) -> None:
    async with running_portal(tmp_path, portal_allowed_groups=[rule]) as rig:
        rig.fake.groups = [*ACME_GROUPS, "ACME/Team-A"]
        rig.fake.user = GitLabUser(7, "grace", "Grace Hopper", memberships=memberships)
        page = await rig.browser().login()
        assert page.status == 200, page.text
        assert page.key() is not None
        assert rig.store.get_user("gitlab:7") is not None


async def test_a_member_of_a_subgroup_only_is_not_admitted_by_a_sibling_rule(
    tmp_path: Path,
) -> None:
    async with running_portal(tmp_path, portal_allowed_groups=["acme/team-b"]) as rig:
        rig.fake.groups = ["acme", "acme/team-a", "acme/team-b"]
        rig.fake.user = GitLabUser(8, "eve", "Eve", memberships=["acme/team-a"])
        page = await rig.browser().login()
        assert page.status == 403
        assert page.key() is None


async def test_allowed_users_by_id_and_by_username(tmp_path: Path) -> None:
    rules = ["gitlab:42", "Linus"]
    async with running_portal(tmp_path, portal_allowed_users=rules) as rig:
        for user, allowed in (
            (GitLabUser(42, "renamed-since", "By id"), True),
            (GitLabUser(43, "linus", "By username, any case"), True),
            (GitLabUser(44, "linus2", "Neither"), False),
        ):
            rig.fake.user = user
            page = await rig.browser().login()
            assert (page.status, page.key() is not None) == (
                (200, True) if allowed else (403, False)
            ), user


async def test_a_user_removed_from_the_group_cannot_log_in_again(tmp_path: Path) -> None:
    async with running_portal(tmp_path, portal_allowed_groups=["acme"]) as rig:
        rig.fake.user = GitLabUser(9, "leaver", "Leaver", memberships=["acme"])
        assert (await rig.browser().login()).key() is not None
        rig.fake.user.memberships = []
        page = await rig.browser().login()
        assert page.status == 403
        assert page.key() is None


async def test_an_app_built_without_access_rules_refuses_to_start(tmp_path: Path) -> None:
    settings = BrokerSettings(
        users_file=str(tmp_path / "users.yaml"),
        public_url="http://127.0.0.1:1",
        gitlab_client_id="id",
        gitlab_client_secret="secret",
        session_secret="s" * 32,
    )
    with pytest.raises(ConfigError, match="no access rule"):
        create_app(settings, UserStore(tmp_path / "users.yaml"))


async def test_the_fake_gitlab_answers_userinfo_only_to_openid_tokens(tmp_path: Path) -> None:
    """The fake's userinfo is GitLab's: no token 401, no ``openid`` scope 403, claims as
    GitLab sends them (``sub`` a string, the username as nickname and preferred_username)."""
    async with running_portal(tmp_path) as rig:
        rig.fake.groups = ["acme", "acme/x"]
        rig.fake.user = GitLabUser(5, "ada", "Ada", memberships=["acme"])
        browser = rig.browser()
        async with browser.http.get(f"{rig.fake.url}/oauth/userinfo") as r:
            assert r.status == 401
            assert "invalid_token" in r.headers["WWW-Authenticate"]
        await browser.login()
        [token] = rig.fake.access_tokens()
        headers = {"Authorization": f"Bearer {token}"}
        async with browser.http.get(f"{rig.fake.url}/oauth/userinfo", headers=headers) as r:
            claims = await r.json()
        assert claims["sub"] == "5"
        assert claims["nickname"] == claims["preferred_username"] == "ada"
        assert claims["groups"] == ["acme", "acme/x"]
        assert claims["groups_direct"] == ["acme"]
        read_user_only = rig.fake.issue_token(rig.fake.user, frozenset({"read_user"}))
        headers = {"Authorization": f"Bearer {read_user_only}"}
        async with browser.http.get(f"{rig.fake.url}/oauth/userinfo", headers=headers) as r:
            assert r.status == 403
            assert (await r.json())["error"] == "insufficient_scope"


def test_serve_without_a_rule_exits_with_the_reason_and_the_flag_to_open_it(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from remotellm_broker.cli import main

    env = {
        "REMOTELLM_BROKER_GITLAB_CLIENT_ID": "id",
        "REMOTELLM_BROKER_GITLAB_CLIENT_SECRET": "secret",
        "REMOTELLM_BROKER_SESSION_SECRET": "s" * 32,
        "REMOTELLM_BROKER_PUBLIC_URL": "http://127.0.0.1:1",
    }
    args = ["serve", "--users-file", str(tmp_path / "u.yaml"), "--port", "0"]
    refused = CliRunner().invoke(main, args, env=env)
    assert refused.exit_code == 1
    assert "no access rule" in refused.output
    assert "--portal-allow-any-gitlab-user" in refused.output
    bad = CliRunner().invoke(main, [*args, "--portal-allowed-groups", "acme/"], env=env)
    assert bad.exit_code == 1
    assert "'acme/' is not a GitLab group's full path" in bad.output


async def test_the_broker_uses_the_endpoints_gitlabs_discovery_document_names(
    tmp_path: Path,
) -> None:
    """The portal calls GitLab's fixed OIDC paths; they must be the ones GitLab announces, and
    the fake's ID token (which the broker does not need: it reads userinfo) must verify."""
    import base64
    import json

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from remotellm_broker.portal import PORTAL

    async with running_portal(tmp_path) as rig:
        browser = rig.browser()
        async with browser.http.get(f"{rig.fake.url}/.well-known/openid-configuration") as r:
            discovery = await r.json()
        oauth = rig.app[PORTAL].oauth
        assert oauth.authorize_endpoint == discovery["authorization_endpoint"]
        assert oauth.token_endpoint == discovery["token_endpoint"]
        assert oauth.userinfo_endpoint == discovery["userinfo_endpoint"]
        assert "openid" in discovery["scopes_supported"]

        await browser.login()
        assert rig.fake.token_requests[-1].status == 200
        [token] = rig.fake.access_tokens()
        id_token = rig.fake.id_tokens[token]
        async with browser.http.get(discovery["jwks_uri"]) as r:
            [jwk] = (await r.json())["keys"]

        def unb64(text: str) -> bytes:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

        head, body, signature = id_token.split(".")
        public = rsa.RSAPublicNumbers(
            int.from_bytes(unb64(jwk["e"])), int.from_bytes(unb64(jwk["n"]))
        ).public_key()
        public.verify(
            unb64(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        claims = json.loads(unb64(body))
        assert claims["sub"] == "101"
        assert claims["aud"] == rig.fake.client_id
        assert claims["iss"] == discovery["issuer"]
