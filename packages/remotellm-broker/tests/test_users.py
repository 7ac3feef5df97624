"""The user store: key checks, blocking, portal users, reloads, concurrent writers."""

import multiprocessing
import os
import stat
import threading
import warnings
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from remotellm_broker.keys import generate_api_key, hash_secret, looks_like_api_key
from remotellm_broker.users import RELOAD_INTERVAL_S, KeyIdentity, UserStore, UserStoreError


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "users.yaml"


@pytest.fixture
def store(path: Path) -> UserStore:
    return UserStore(path)


def hand_edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# -- keys ------------------------------------------------------------------------------


def test_a_new_user_key_authenticates(store: UserStore) -> None:
    key = store.add_user("alice")
    assert looks_like_api_key(key)
    identity = store.authenticate(key)
    assert identity is not None
    assert (identity.user_id, identity.name, identity.blocked) == ("local:alice", "alice", False)
    assert identity.key_id.startswith("k-")


def test_an_unknown_key_is_none(store: UserStore) -> None:
    store.add_user("alice")
    assert store.authenticate(generate_api_key()) is None
    assert store.authenticate("") is None
    assert store.authenticate("not a key at all ✓") is None


def test_the_file_holds_only_hash_and_prefix(store: UserStore, path: Path) -> None:
    key = store.add_user("alice")
    text = path.read_text()
    assert key not in text
    assert key[3:] not in text
    assert hash_secret(key) in text
    assert key[:7] + "…" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_same_name_cannot_be_added_twice(store: UserStore) -> None:
    store.add_user("alice")
    with pytest.raises(UserStoreError, match="already exists"):
        store.add_user("alice")


@pytest.mark.parametrize("name", ["", "a:b", "has space", "-dash", "x" * 65, "ü"])
def test_names_must_be_command_line_friendly(store: UserStore, name: str) -> None:
    with pytest.raises(UserStoreError, match="invalid user name"):
        store.add_user(name)


def test_rotate_gives_a_new_key_and_the_old_stops_at_once(store: UserStore) -> None:
    old = store.add_user("alice")
    new = store.rotate("alice")
    assert new != old
    assert store.authenticate(old) is None
    identity = store.authenticate(new)
    assert identity is not None
    assert identity.user_id == "local:alice"


def test_delete_removes_the_user_and_the_key(store: UserStore) -> None:
    key = store.add_user("alice")
    store.delete("alice")
    assert store.authenticate(key) is None
    assert store.list_users() == []
    with pytest.raises(UserStoreError, match="no user named 'alice'"):
        store.delete("alice")


def test_unknown_names_are_errors(store: UserStore) -> None:
    for action in (store.rotate, store.unblock):
        with pytest.raises(UserStoreError, match="no user"):
            action("ghost")
    with pytest.raises(UserStoreError, match="no user"):
        store.issue_key_for("gitlab:404")


# -- blocking --------------------------------------------------------------------------


def test_a_blocked_user_authenticates_as_blocked(store: UserStore) -> None:
    key = store.add_user("alice")
    store.block("alice")
    assert store.authenticate(key) == KeyIdentity(
        user_id="local:alice",
        key_id=store.list_users()[0].key_id or "",
        name="alice",
        blocked=True,
    )
    store.unblock("alice")
    identity = store.authenticate(key)
    assert identity is not None
    assert not identity.blocked


def test_blocking_matches_usernames_case_insensitively(store: UserStore) -> None:
    store.add_user("Alice")
    store.block("alice")
    assert store.list_users()[0].blocked


def test_a_username_can_be_blocked_before_its_first_login(store: UserStore) -> None:
    store.block("mallory")
    assert store.blocked_usernames() == ["mallory"]
    record = store.upsert_gitlab_user(99, "mallory", "Mallory")
    assert record.blocked
    identity = store.authenticate(store.issue_key_for(record.user_id))
    assert identity is not None
    assert identity.blocked
    store.unblock("mallory")
    assert store.blocked_usernames() == []
    assert not store.get_user("gitlab:99").blocked  # type: ignore[union-attr]


def test_block_covers_every_record_with_that_name(store: UserStore) -> None:
    local_key = store.add_user("bob")
    store.upsert_gitlab_user(5, "bob", "Bob")
    portal_key = store.issue_key_for("gitlab:5")
    store.block("bob")
    for key in (local_key, portal_key):
        identity = store.authenticate(key)
        assert identity is not None
        assert identity.blocked


def test_rotate_of_an_ambiguous_name_asks_for_the_id(store: UserStore) -> None:
    store.add_user("bob")
    store.upsert_gitlab_user(5, "bob", "Bob")
    with pytest.raises(UserStoreError, match="give the user id"):
        store.rotate("bob")
    assert looks_like_api_key(store.rotate("gitlab:5"))


def test_a_renamed_gitlab_user_is_blocked_if_the_new_name_is(store: UserStore) -> None:
    store.upsert_gitlab_user(7, "eve", "Eve")
    store.block("evil")
    assert store.upsert_gitlab_user(7, "evil", "Eve").blocked


# -- portal users ----------------------------------------------------------------------


def test_first_login_creates_the_user_without_a_key(store: UserStore) -> None:
    record = store.upsert_gitlab_user(42, "carol", "Carol C")
    assert record.user_id == "gitlab:42"
    assert (record.name, record.display_name, record.gitlab_id) == ("carol", "Carol C", 42)
    assert not record.has_key
    assert record.created
    assert record.last_login == record.created
    assert store.get_user("gitlab:42") == record


def test_a_returning_user_keeps_the_identity_and_the_key(store: UserStore) -> None:
    store.upsert_gitlab_user(42, "carol", "Carol")
    key = store.issue_key_for("gitlab:42")
    record = store.upsert_gitlab_user(42, "carol2", "Carol Two")
    assert (record.name, record.display_name) == ("carol2", "Carol Two")
    assert record.key_prefix == key[:7] + "…"
    identity = store.authenticate(key)
    assert identity is not None
    assert identity.name == "carol2"
    assert len(store.list_users()) == 1


def test_issue_key_for_replaces_the_old_key(store: UserStore) -> None:
    store.upsert_gitlab_user(42, "carol", "Carol")
    first = store.issue_key_for("gitlab:42")
    second = store.issue_key_for("gitlab:42")
    assert store.authenticate(first) is None
    assert store.authenticate(second) is not None
    assert store.get_user("gitlab:42").key_prefix == second[:7] + "…"  # type: ignore[union-attr]


def test_get_user_of_an_unknown_id_is_none(store: UserStore) -> None:
    assert store.get_user("gitlab:1") is None


# -- limits ----------------------------------------------------------------------------


def test_per_user_limits_reach_the_identity(store: UserStore) -> None:
    key = store.add_user("alice")
    store.set_limits("alice", rate_limit_rpm=10, rate_limit_burst=0, max_streams=2)
    identity = store.authenticate(key)
    assert identity is not None
    assert (identity.rate_limit_rpm, identity.rate_limit_burst, identity.max_streams) == (10, 0, 2)
    store.set_limits("alice", rate_limit_rpm=None, rate_limit_burst=None, max_streams=None)
    identity = store.authenticate(key)
    assert identity is not None
    assert identity.rate_limit_rpm is None


def test_negative_limits_are_refused(store: UserStore) -> None:
    store.add_user("alice")
    with pytest.raises(UserStoreError, match="0 \\(unlimited\\) or more"):
        store.set_limits("alice", rate_limit_rpm=-1, rate_limit_burst=None, max_streams=None)


def test_hand_edited_limits_apply(store: UserStore, path: Path) -> None:
    key = store.add_user("alice")
    hand_edit(path, "  name: alice\n", "  name: alice\n  max_streams: 3\n")
    assert store.reload_if_changed()
    identity = store.authenticate(key)
    assert identity is not None
    assert identity.max_streams == 3


# -- environment service accounts ------------------------------------------------------


def test_environment_keys_raw_or_hashed_authenticate(path: Path) -> None:
    raw, hashed = generate_api_key(), generate_api_key()
    store = UserStore(path, env_api_keys=[raw, hash_secret(hashed)])
    for key in (raw, hashed):
        identity = store.authenticate(key)
        assert identity is not None
        assert identity.user_id.startswith("env:")
        assert not identity.blocked
    assert store.authenticate(hash_secret(hashed)) is None  # the hash is not a key
    assert not path.exists()  # nothing was written


def test_environment_accounts_can_be_blocked_by_name(path: Path) -> None:
    key = generate_api_key()
    store = UserStore(path, env_api_keys=[key])
    identity = store.authenticate(key)
    assert identity is not None
    store.block(identity.name)
    blocked = store.authenticate(key)
    assert blocked is not None
    assert blocked.blocked


def test_a_malformed_environment_key_is_refused(path: Path) -> None:
    with pytest.raises(UserStoreError, match="invalid service key"):
        UserStore(path, env_api_keys=["short"])


# -- connector tokens ------------------------------------------------------------------


def test_connector_tokens_are_created_checked_and_revoked(store: UserStore, path: Path) -> None:
    token = store.create_connector_token("home-gpu")
    assert store.check_connector_token(token) == "home-gpu"
    assert token not in path.read_text()
    assert [t.name for t in store.list_connector_tokens()] == ["home-gpu"]
    with pytest.raises(UserStoreError, match="already exists"):
        store.create_connector_token("home-gpu")
    store.revoke_connector_token("home-gpu")
    assert store.check_connector_token(token) is None
    with pytest.raises(UserStoreError, match="no connector token"):
        store.revoke_connector_token("home-gpu")


def test_connector_tokens_from_the_environment(path: Path) -> None:
    token = "a-token-from-the-vault-0123456789"
    store = UserStore(path, env_connector_tokens=[token])
    name = store.check_connector_token(token)
    assert name is not None
    assert name.startswith("env-token-")
    assert store.check_connector_token("wrong-token-0123456789") is None


def test_an_api_key_is_not_a_connector_token(store: UserStore) -> None:
    key = store.add_user("alice")
    assert store.check_connector_token(key) is None
    token = store.create_connector_token("gpu")
    assert store.authenticate(token) is None


# -- reloads ---------------------------------------------------------------------------


def test_nothing_changed_means_no_reload(store: UserStore) -> None:
    assert not store.reload_if_changed()


def test_another_process_writes_are_picked_up(store: UserStore, path: Path) -> None:
    other = UserStore(path)
    key = other.add_user("bob")
    assert store.authenticate(key) is None
    assert store.reload_if_changed()
    assert store.authenticate(key) is not None
    other.block("bob")
    assert store.reload_if_changed()
    identity = store.authenticate(key)
    assert identity is not None
    assert identity.blocked


def test_a_hand_edit_is_picked_up(store: UserStore, path: Path) -> None:
    key = store.add_user("alice")
    store.reload_if_changed()
    hand_edit(path, "  name: alice\n", "  name: alice\n  blocked: true\n")
    assert store.reload_if_changed()
    identity = store.authenticate(key)
    assert identity is not None
    assert identity.blocked


def test_a_broken_hand_edit_keeps_the_last_good_state_and_logs_once(
    store: UserStore, path: Path
) -> None:
    key = store.add_user("alice")
    store.reload_if_changed()
    good = path.read_text()
    path.write_text(good + "  blocked: [oops\n")
    with capture_logs() as logs:
        assert not store.reload_if_changed()
        assert not store.reload_if_changed()
    assert [e["event"] for e in logs] == ["users_file_rejected"]
    assert "not valid YAML" in logs[0]["error"]
    assert logs[0]["log_level"] == "error"
    assert store.authenticate(key) is not None
    with pytest.raises(UserStoreError, match="not valid YAML"):
        store.add_user("bob")  # a broken file is never overwritten
    path.write_text(good.replace("  name: alice\n", "  name: alice\n  blocked: true\n"))
    assert store.reload_if_changed()
    identity = store.authenticate(key)
    assert identity is not None
    assert identity.blocked


def test_a_schema_error_in_a_hand_edit_is_not_applied(store: UserStore, path: Path) -> None:
    key = store.add_user("alice")
    store.reload_if_changed()
    hand_edit(path, "  name: alice\n", "  name: alice\n  blocked: maybe\n")
    with capture_logs() as logs:
        assert not store.reload_if_changed()
    assert "blocked" in logs[0]["error"]
    identity = store.authenticate(key)
    assert identity is not None
    assert not identity.blocked


def test_a_deleted_file_means_no_users(store: UserStore, path: Path) -> None:
    key = store.add_user("alice")
    store.reload_if_changed()
    path.unlink()
    assert store.reload_if_changed()
    assert store.authenticate(key) is None


def test_a_broken_file_at_start_is_an_error(path: Path) -> None:
    path.write_text("users: {")
    with pytest.raises(UserStoreError, match="not valid YAML"):
        UserStore(path)


def test_on_change_runs_after_any_change_in_the_polling_thread(
    store: UserStore, path: Path
) -> None:
    calls: list[str] = []
    store.on_change(lambda: calls.append(threading.current_thread().name))
    store.add_user("alice")  # a write of this process ...
    assert calls == []  # ... is not announced from the writing call,
    assert store.reload_if_changed()  # but from the next poll
    assert calls == [threading.current_thread().name]
    UserStore(path).block("alice")  # another process
    store.reload_if_changed()
    assert len(calls) == 2
    assert not store.reload_if_changed()
    assert len(calls) == 2


def test_a_failing_callback_does_not_stop_the_others(store: UserStore) -> None:
    calls: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    store.on_change(broken)
    store.on_change(lambda: calls.append(1))
    store.add_user("alice")
    with capture_logs() as logs:
        assert store.reload_if_changed()
    assert calls == [1]
    assert logs[0]["event"] == "users_on_change_callback_failed"


def test_a_reload_racing_a_local_write_never_goes_back_in_time(path: Path) -> None:
    store = UserStore(path)
    other = UserStore(path)
    other.add_user("old")
    stop = threading.Event()
    keys: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            store.reload_if_changed()

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for i in range(30):
            key = store.add_user(f"u{i}")
            keys.append(key)
            assert store.authenticate(key) is not None  # usable at once, despite the poller
    finally:
        stop.set()
        poller.join(10)
    store.reload_if_changed()
    assert all(store.authenticate(k) is not None for k in keys)


# -- concurrent writers ----------------------------------------------------------------


def _add_users(path_str: str, prefix: str, count: int) -> None:
    store = UserStore(Path(path_str))
    for i in range(count):
        store.add_user(f"{prefix}{i}")


def test_fifty_concurrent_writers_lose_no_user(path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    processes = [ctx.Process(target=_add_users, args=(str(path), f"p{n}-", 2)) for n in range(25)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() while threads run, 3.12+
        for process in processes:
            process.start()
    threads = [
        threading.Thread(target=_add_users, args=(str(path), f"t{n}-", 2)) for n in range(25)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    names = {record.name for record in UserStore(path).list_users()}
    assert len(names) == 100
    assert [p for p in os.listdir(path.parent) if ".tmp-" in p] == []


def test_an_overlong_key_is_refused_without_hashing(store: UserStore) -> None:
    store.add_user("alice")
    assert store.authenticate("sk-" + "0" * 10_000) is None
    assert store.check_connector_token("rct-" + "0" * 10_000) is None


def test_a_write_that_would_break_the_file_is_refused(store: UserStore, path: Path) -> None:
    store.add_user("alice")
    before = path.read_bytes()
    with pytest.raises(UserStoreError, match="refusing to write an invalid users file"):
        store.upsert_gitlab_user(1, "x" * 300, "Too Long")
    assert path.read_bytes() == before
    assert store.add_user("bob")  # and the file still takes writes


def test_odd_gitlab_names_round_trip(store: UserStore, path: Path) -> None:
    name = "<script>alert('x')</script> \"Zoë\"\n: - [x]"
    store.upsert_gitlab_user(8, "zoe", name)
    assert UserStore(path).get_user("gitlab:8").display_name == name  # type: ignore[union-attr]


def test_a_symlinked_users_file_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "data" / "users.yaml"
    real.parent.mkdir()
    link = tmp_path / "users.yaml"
    link.symlink_to(real)
    store = UserStore(link)
    key = store.add_user("alice")
    assert link.is_symlink()
    assert UserStore(real).authenticate(key) is not None
    UserStore(link).block("alice")
    assert store.reload_if_changed()
    assert store.list_users()[0].blocked


def test_a_change_by_another_process_applies_within_a_second(path: Path) -> None:
    """The broker polls every RELOAD_INTERVAL_S; a block by the CLI must bite within a second."""
    import time

    store = UserStore(path)
    key = store.add_user("alice")
    store.reload_if_changed()
    blocked = threading.Event()
    store.on_change(lambda: blocked.set() if (i := store.authenticate(key)) and i.blocked else None)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(RELOAD_INTERVAL_S):
            store.reload_if_changed()

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        ctx = multiprocessing.get_context("fork")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            writer = ctx.Process(target=_block, args=(str(path), "alice"))
            writer.start()
        writer.join(10)
        written = time.monotonic()
        assert blocked.wait(1.0)
        assert time.monotonic() - written <= 1.0
    finally:
        stop.set()
        poller.join(5)


def _block(path_str: str, name: str) -> None:
    UserStore(Path(path_str)).block(name)
