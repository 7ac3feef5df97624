"""The pure edits of users.yaml: each takes the content and returns the new content or says
why not, and never lands on the wrong user."""

from __future__ import annotations

import pytest

from remotellm_broker.keys import display_prefix, generate_api_key, hash_secret
from remotellm_broker.useredits import (
    add_connector_token,
    add_local_user,
    delete_user,
    record_gitlab_login,
    resolve,
    revoke_connector_token,
    set_blocked,
    set_key,
    set_limits,
    valid_name,
)
from remotellm_broker.userfile import UserEntry, UsersFile, UserStoreError

T0, T1 = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
ALICE = UserEntry(id="local:alice", name="alice")
BOB = UserEntry(id="local:bob", name="bob")


def users(*entries: UserEntry) -> UsersFile:
    return UsersFile(users=list(entries))


def test_valid_names_look_like_gitlab_usernames_and_never_like_ids() -> None:
    for name in ("alice", "a.b-c_d", "_bot", "x" * 64, "0day"):
        assert valid_name(name), name
    for name in ("", "local:alice", "-dash", ".dot", "x" * 65, "two words", "ünï"):
        assert not valid_name(name), name


def test_a_local_user_gets_an_id_and_only_the_hash_and_prefix_of_the_key() -> None:
    key = generate_api_key()
    content = add_local_user(UsersFile(), "alice", key, T0)
    (entry,) = content.users
    assert (entry.id, entry.name) == ("local:alice", "alice")
    assert entry.created == entry.key_created == T0
    assert entry.key_hash == hash_secret(key)
    assert entry.key_prefix == display_prefix(key)
    assert key not in repr(content)


def test_adding_an_existing_or_badly_named_user_is_refused_and_changes_nothing() -> None:
    content = add_local_user(UsersFile(), "alice", generate_api_key(), T0)
    with pytest.raises(UserStoreError, match="already exists"):
        add_local_user(content, "alice", generate_api_key(), T1)
    with pytest.raises(UserStoreError, match="invalid user name"):
        add_local_user(content, "local:bob", generate_api_key(), T1)
    assert len(content.users) == 1


def test_resolve_prefers_the_id_then_a_case_insensitive_name() -> None:
    content = users(
        UserEntry(id="local:alice", name="alice"),
        UserEntry(id="gitlab:7", name="Alice2"),
    )
    assert resolve(content, "gitlab:7").id == "gitlab:7"
    assert resolve(content, "ALICE").id == "local:alice"
    with pytest.raises(UserStoreError, match="no user named 'carol'"):
        resolve(content, "carol")


def test_a_name_shared_by_two_users_must_be_given_as_an_id() -> None:
    content = users(UserEntry(id="local:sam", name="sam"), UserEntry(id="gitlab:9", name="Sam"))
    with pytest.raises(UserStoreError, match=r"several users \(local:sam, gitlab:9\)"):
        resolve(content, "sam")
    assert resolve(content, "gitlab:9").name == "Sam"


def test_a_new_key_replaces_the_old_one_for_that_user_only() -> None:
    old, new = generate_api_key(), generate_api_key()
    content = add_local_user(UsersFile(), "alice", old, T0)
    content = add_local_user(content, "bob", generate_api_key(), T0)
    bob_before = content.users[1]
    content = set_key(content, "alice", new, T1)
    alice, bob = content.users
    assert alice.key_hash == hash_secret(new)
    assert alice.key_created == T1
    assert alice.created == T0
    assert bob == bob_before


def test_blocking_and_unblocking_a_known_user() -> None:
    content = users(ALICE, BOB)
    blocked = set_blocked(content, "Alice", blocked=True)
    assert [u.blocked for u in blocked.users] == [True, False]
    assert blocked.blocked_usernames == []
    assert [u.blocked for u in set_blocked(blocked, "local:alice", blocked=False).users] == [
        False,
        False,
    ]


def test_unblocking_someone_unknown_and_not_blocked_is_an_error() -> None:
    with pytest.raises(UserStoreError, match="no user named 'ghost'"):
        set_blocked(UsersFile(), "ghost", blocked=False)


def test_delete_removes_exactly_one_user() -> None:
    content = users(ALICE, BOB)
    assert [u.id for u in delete_user(content, "alice").users] == ["local:bob"]
    with pytest.raises(UserStoreError):
        delete_user(content, "carol")


def test_limits_are_set_and_cleared_per_user_and_never_negative() -> None:
    content = users(ALICE, BOB)
    limited = set_limits(content, "alice", rate_limit_rpm=60, rate_limit_burst=0, max_streams=2)
    alice, bob = limited.users
    assert (alice.rate_limit_rpm, alice.rate_limit_burst, alice.max_streams) == (60, 0, 2)
    assert (bob.rate_limit_rpm, bob.max_streams) == (None, None)
    cleared = set_limits(
        limited, "alice", rate_limit_rpm=None, rate_limit_burst=None, max_streams=None
    )
    assert cleared.users[0] == ALICE
    with pytest.raises(UserStoreError, match="0 \\(unlimited\\) or more"):
        set_limits(content, "alice", rate_limit_rpm=-1, rate_limit_burst=None, max_streams=None)


def test_a_gitlab_login_creates_the_user_once_and_a_rename_keeps_record_and_key() -> None:
    content = record_gitlab_login(UsersFile(), 42, "alice", "Alice A.", T0)
    (entry,) = content.users
    assert (entry.id, entry.gitlab_id, entry.name) == ("gitlab:42", 42, "alice")
    assert entry.created == entry.last_login == T0
    key = generate_api_key()
    content = set_key(content, "gitlab:42", key, T0)
    renamed = record_gitlab_login(content, 42, "alice-new", "Alice N.", T1)
    (entry,) = renamed.users
    assert (entry.name, entry.display_name, entry.last_login) == ("alice-new", "Alice N.", T1)
    assert entry.created == T0
    assert entry.key_hash == hash_secret(key)


def test_connector_tokens_are_added_once_by_name_and_revoked_by_name() -> None:
    token = "rct-" + "ab" * 24
    content = add_connector_token(UsersFile(), "gpu-1", token, T0)
    (entry,) = content.connector_tokens
    assert (entry.name, entry.token_hash, entry.created) == ("gpu-1", hash_secret(token), T0)
    assert token not in repr(content)
    with pytest.raises(UserStoreError, match="already exists"):
        add_connector_token(content, "gpu-1", "rct-" + "cd" * 24, T1)
    with pytest.raises(UserStoreError, match="invalid token name"):
        add_connector_token(content, "gpu 2", token, T1)
    assert revoke_connector_token(content, "gpu-1").connector_tokens == []
    with pytest.raises(UserStoreError, match="no connector token named 'gpu-2'"):
        revoke_connector_token(content, "gpu-2")


def test_edits_return_new_content_and_leave_the_input_unchanged() -> None:
    content = add_local_user(UsersFile(), "alice", generate_api_key(), T0)
    snapshot = repr(content)
    set_blocked(content, "alice", blocked=True)
    set_key(content, "alice", generate_api_key(), T1)
    delete_user(content, "alice")
    assert repr(content) == snapshot
