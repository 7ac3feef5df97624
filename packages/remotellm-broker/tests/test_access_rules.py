"""The portal's access rules and the pre-block resolution, as pure functions."""

from __future__ import annotations

import pytest

from remotellm_broker import useredits as edits
from remotellm_broker.portal.access import AccessRules
from remotellm_broker.portal.oauth import GitLabRefused, parse_userinfo
from remotellm_broker.userfile import UsersFile

NOW = "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("groups", "admitted"),
    [
        (["acme"], True),
        (["acme/team-a/deep"], True),
        (["ACME/Team-A"], True),
        (["acme-evil", "acmeco", "acme.x", "x/acme", "acm"], False),
        ([], False),
    ],
)
def test_a_group_rule_admits_the_group_and_its_subgroups_only(
    groups: list[str], admitted: bool
) -> None:
    rules = AccessRules.from_settings(groups=["acme"], users=[], allow_any=False)
    assert rules.decide(1, "someone", groups).allowed is admitted


def test_user_rules_by_id_and_case_insensitive_username() -> None:
    rules = AccessRules.from_settings(groups=[], users=["gitlab:42", "Grace"], allow_any=False)
    assert rules.decide(42, "anything", []).reason == "allowed_user_id"
    assert rules.decide(7, "grace", []).reason == "allowed_username"
    assert not rules.decide(43, "gracey", []).allowed


def test_no_rule_admits_nobody_and_allow_any_admits_everyone() -> None:
    assert AccessRules().decide(1, "a", ["acme"]).reason == "no_rules"
    assert AccessRules(allow_any=True).decide(1, "a", []).allowed


def test_userinfo_claims_are_parsed_like_gitlab_sends_them() -> None:
    user = parse_userinfo(
        {"sub": "42", "nickname": "grace", "name": "Grace", "groups": ["acme", 3, ""]}
    )
    assert (user.id, user.username, user.name, user.groups) == (42, "grace", "Grace", ("acme",))
    fallback = parse_userinfo({"sub": "7", "preferred_username": "ada"})
    assert fallback.username == "ada"
    assert fallback.groups == ()


@pytest.mark.parametrize(
    "claims",
    [
        {"nickname": "x"},
        {"sub": 42, "nickname": "x"},
        {"sub": "abc", "nickname": "x"},
        {"sub": "0", "nickname": "x"},
        {"sub": "-4", "nickname": "x"},
        {"sub": "١٢", "nickname": "x"},  # digits, but not ASCII ones
        {"sub": "42"},
        {"sub": "42", "nickname": "x", "groups": "acme"},
    ],
)
def test_userinfo_without_a_usable_identity_is_refused(claims: dict[str, object]) -> None:
    with pytest.raises(GitLabRefused):
        parse_userinfo(claims)


def test_a_pre_block_is_resolved_to_the_id_at_first_login() -> None:
    content = edits.set_blocked(UsersFile(), "Mallory", blocked=True)
    assert content.blocked_usernames == ["Mallory"]
    content = edits.record_gitlab_login(content, 666, "mallory", "M", NOW)
    assert content.blocked_usernames == []
    [entry] = content.users
    assert entry.blocked
    content = edits.record_gitlab_login(content, 666, "renamed", "M", NOW)
    assert content.users[0].blocked
    assert content.users[0].name == "renamed"


def test_a_pre_block_of_the_old_name_catches_a_known_user_who_renames() -> None:
    content = edits.record_gitlab_login(UsersFile(), 5, "trudy", "T", NOW)
    # A hand edit of users.yaml, or a block racing the login: the name is on the list while
    # the record exists under it.
    content = UsersFile(users=content.users, blocked_usernames=["trudy"])
    content = edits.record_gitlab_login(content, 5, "trudy2", "T", NOW)
    assert content.users[0].blocked
    assert content.blocked_usernames == []


def test_logout_bumps_the_session_epoch() -> None:
    content = edits.record_gitlab_login(UsersFile(), 5, "u", "U", NOW)
    assert content.users[0].session_epoch == 0
    content = edits.end_sessions(content, "gitlab:5")
    assert content.users[0].session_epoch == 1
