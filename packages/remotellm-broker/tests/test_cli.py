"""The users/tokens command line, in-process with CliRunner and once as a real process."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from remotellm_broker.__about__ import __version__
from remotellm_broker.cli import main
from remotellm_broker.users import UserStore

KEY_LINE = re.compile(r"sk-[0-9a-f]{32}\n")


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    # The CLI may point structlog at stderr; leave the configuration as it was.
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    yield
    if was_configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return tmp_path / "users.yaml"


def run(users_file: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--users-file", str(users_file)])


def ok(users_file: Path, *args: str) -> Result:
    result = run(users_file, *args)
    assert result.exit_code == 0, result.output
    return result


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_serve_users_and_tokens_are_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    for command in ("serve", "users", "tokens"):
        assert command in result.stdout


def test_users_add_prints_the_key_as_the_only_line(users_file: Path) -> None:
    result = ok(users_file, "users", "add", "alice")
    assert KEY_LINE.fullmatch(result.stdout)
    identity = UserStore(users_file).authenticate(result.stdout.strip())
    assert identity is not None
    assert identity.user_id == "local:alice"


def test_users_add_twice_fails_on_stderr(users_file: Path) -> None:
    ok(users_file, "users", "add", "alice")
    result = run(users_file, "users", "add", "alice")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "already exists" in result.stderr


def test_users_rotate_prints_a_new_key_and_the_old_one_stops(users_file: Path) -> None:
    old = ok(users_file, "users", "add", "alice").stdout.strip()
    result = ok(users_file, "users", "rotate", "alice")
    assert KEY_LINE.fullmatch(result.stdout)
    store = UserStore(users_file)
    assert store.authenticate(old) is None
    assert store.authenticate(result.stdout.strip()) is not None


def test_block_unblock_and_delete(users_file: Path) -> None:
    key = ok(users_file, "users", "add", "alice").stdout.strip()
    assert "blocked alice" in ok(users_file, "users", "block", "alice").stderr
    identity = UserStore(users_file).authenticate(key)
    assert identity is not None
    assert identity.blocked
    ok(users_file, "users", "unblock", "alice")
    identity = UserStore(users_file).authenticate(key)
    assert identity is not None
    assert not identity.blocked
    ok(users_file, "users", "delete", "alice")
    assert UserStore(users_file).authenticate(key) is None


def test_blocking_an_unknown_name_pre_blocks_a_portal_user(users_file: Path) -> None:
    result = ok(users_file, "users", "block", "mallory")
    assert "pre-blocked mallory" in result.stderr
    assert result.stdout == ""
    assert UserStore(users_file).upsert_gitlab_user(3, "mallory", "M").blocked


def test_commands_on_unknown_users_fail(users_file: Path) -> None:
    for command in ("rotate", "delete", "unblock"):
        result = run(users_file, "users", command, "ghost")
        assert result.exit_code == 1
        assert "no user named 'ghost'" in result.stderr


def test_users_list_shows_status_prefix_and_limits(users_file: Path) -> None:
    key = ok(users_file, "users", "add", "alice").stdout.strip()
    ok(users_file, "users", "add", "bob")
    ok(users_file, "users", "block", "bob")
    ok(users_file, "users", "block", "mallory")
    ok(users_file, "users", "limits", "alice", "--rpm", "10", "--max-streams", "2")
    lines = ok(users_file, "users", "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "STATUS", "KEY", "LAST", "LOGIN", "LIMITS"]
    assert lines[1].split() == [
        "alice",
        "local:alice",
        "active",
        key[:7] + "…",
        "-",
        "rpm=10,streams=2",
    ]
    assert lines[2].split()[:3] == ["bob", "local:bob", "blocked"]
    assert lines[3].split()[:3] == ["mallory", "-", "pre-blocked"]
    assert key not in "\n".join(lines)


def test_users_list_as_json(users_file: Path) -> None:
    ok(users_file, "users", "add", "alice")
    (line,) = ok(users_file, "users", "list", "--json").stdout.splitlines()
    record = json.loads(line)
    assert record["user_id"] == "local:alice"
    assert record["has_key"] is True
    assert "key_hash" not in record


def test_users_limits_validates_and_resets(users_file: Path) -> None:
    ok(users_file, "users", "add", "alice")
    assert run(users_file, "users", "limits", "alice", "--rpm", "-1").exit_code == 2
    ok(users_file, "users", "limits", "alice", "--burst", "5")
    assert UserStore(users_file).list_users()[0].rate_limit_burst == 5
    ok(users_file, "users", "limits", "alice")
    assert UserStore(users_file).list_users()[0].rate_limit_burst is None


def test_tokens_create_list_revoke(users_file: Path) -> None:
    result = ok(users_file, "tokens", "create", "home-gpu")
    assert re.fullmatch(r"rct-[0-9a-f]{48}\n", result.stdout)
    token = result.stdout.strip()
    assert UserStore(users_file).check_connector_token(token) == "home-gpu"
    listing = ok(users_file, "tokens", "list").stdout
    assert "home-gpu" in listing
    assert token not in listing
    ok(users_file, "tokens", "revoke", "home-gpu")
    assert UserStore(users_file).check_connector_token(token) is None
    assert run(users_file, "tokens", "revoke", "home-gpu").exit_code == 1


def test_the_users_file_comes_from_the_environment(tmp_path: Path) -> None:
    users_file = tmp_path / "from-env.yaml"
    env = {"REMOTELLM_BROKER_USERS_FILE": str(users_file)}
    result = CliRunner(env=env).invoke(main, ["users", "add", "alice"])
    assert result.exit_code == 0, result.output
    assert users_file.exists()


def test_a_broken_users_file_is_reported_not_overwritten(users_file: Path) -> None:
    users_file.write_text("users: [\n")
    result = run(users_file, "users", "add", "alice")
    assert result.exit_code == 1
    assert "not valid YAML" in result.stderr
    assert users_file.read_text() == "users: [\n"


def test_a_running_broker_sees_cli_changes_on_its_next_poll(users_file: Path) -> None:
    broker = UserStore(users_file)
    key = ok(users_file, "users", "add", "alice").stdout.strip()
    assert broker.reload_if_changed()
    assert broker.authenticate(key) is not None
    ok(users_file, "users", "block", "alice")
    assert broker.reload_if_changed()
    identity = broker.authenticate(key)
    assert identity is not None
    assert identity.blocked


def test_as_a_real_process_stdout_is_only_the_key(tmp_path: Path) -> None:
    env = {**os.environ, "REMOTELLM_BROKER_USERS_FILE": str(tmp_path / "users.yaml")}
    code = "from remotellm_broker.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "users", "add", "bob"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert KEY_LINE.fullmatch(done.stdout)
    assert done.stderr == ""
