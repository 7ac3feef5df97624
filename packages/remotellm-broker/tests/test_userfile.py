"""users.yaml on disk: parsing, validation, atomic and serialised writes, crash safety."""

import errno
import multiprocessing
import os
import signal
import stat
import time
import warnings
from pathlib import Path

import pytest

from remotellm_broker import userfile
from remotellm_broker.userfile import (
    UserEntry,
    UsersFile,
    UserStoreError,
    decode_users_file,
    encode_users_file,
    locked_update,
    read_users_file,
    write_atomically,
)


def users_file(tmp_path: Path) -> Path:
    return tmp_path / "users.yaml"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def test_a_missing_file_reads_as_empty(tmp_path: Path) -> None:
    content, signature = read_users_file(users_file(tmp_path))
    assert content == UsersFile()
    assert signature is None


def test_an_empty_file_reads_as_empty(tmp_path: Path) -> None:
    assert decode_users_file(b"", tmp_path / "u") == UsersFile()
    assert decode_users_file(b"# only a comment\n", tmp_path / "u") == UsersFile()


def test_encoding_round_trips(tmp_path: Path) -> None:
    content = UsersFile(
        users=[
            UserEntry(
                id="gitlab:7",
                name="Zoë",
                display_name="Zoë <b>",
                gitlab_id=7,
                created="2024-05-01T10:00:00Z",
                rate_limit_rpm=0,
                max_streams=3,
            ),
        ],
        blocked_usernames=["mallory"],
    )
    data = encode_users_file(content)
    assert data.startswith(b"# remotellm-broker users file")
    assert decode_users_file(data, tmp_path / "u") == content


def test_hand_written_timestamps_stay_strings(tmp_path: Path) -> None:
    data = b"users:\n- id: local:a\n  name: a\n  created: 2024-05-01T10:00:00Z\n"
    assert decode_users_file(data, tmp_path / "u").users[0].created == "2024-05-01T10:00:00Z"


def test_a_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    data = b"users:\n- id: local:a\n  name: [unclosed\n"
    with pytest.raises(UserStoreError, match=r"not valid YAML at line \d+"):
        decode_users_file(data, tmp_path / "u")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"- just\n- a list\n", "not a valid users file"),
        (b"users:\n- id: local:a\n  name: a\n  blokced: true\n", "blokced"),
        (b"users:\n- id: local:a\n  name: a\n  rate_limit_rpm: -1\n", "rate_limit_rpm"),
        (b"users:\n- id: local:a\n", "name"),
        (b"users:\n- {id: local:a, name: a}\n- {id: local:a, name: b}\n", "appears twice"),
        (
            b"users:\n- {id: local:a, name: a, key_hash: 'sha256:00'}\n"
            b"- {id: local:b, name: b, key_hash: 'sha256:00'}\n",
            "shares a key hash",
        ),
        (b"version: 2\n", "format version 2"),
        (
            b"connector_tokens:\n- {name: t, token_hash: 'sha256:00'}\n"
            b"- {name: t, token_hash: 'sha256:11'}\n",
            "appears twice",
        ),
    ],
)
def test_invalid_content_is_refused_with_a_reason(tmp_path: Path, data: bytes, match: str) -> None:
    with pytest.raises(UserStoreError, match=match):
        decode_users_file(data, tmp_path / "u")


def test_written_file_is_mode_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    old = os.umask(0)
    try:
        locked_update(path, lambda c: c)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.with_name("users.yaml.lock").stat().st_mode) == 0o600


def test_a_rewrite_restores_mode_0600(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    path.write_bytes(b"users: []\n")
    path.chmod(0o644)
    locked_update(path, lambda c: c)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_full_disk_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = users_file(tmp_path)
    locked_update(path, lambda c: UsersFile(blocked_usernames=["old"]))
    before = path.read_bytes()
    real_write = os.write
    calls = 0

    def write_until_full(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, bytes(data)[:10])  # a partial write first, then the disk fills

    monkeypatch.setattr(os, "write", write_until_full)
    with pytest.raises(UserStoreError, match="no space left on device; the old file is unchanged"):
        locked_update(path, lambda c: UsersFile(blocked_usernames=[f"new{i}" for i in range(500)]))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert calls == 2


def test_a_failing_rename_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = users_file(tmp_path)
    write_atomically(path, b"old\n")

    def refuse(src: str, dst: str) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(UserStoreError, match="Read-only file system"):
        write_atomically(path, b"new\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"old\n"
    assert leftovers(tmp_path) == []


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserStoreError, match="cannot"):
        locked_update(tmp_path / "nope" / "users.yaml", lambda c: c)


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    path.mkdir()  # reading a directory fails with EISDIR
    with pytest.raises(UserStoreError, match="cannot read"):
        read_users_file(path)


def test_a_broken_file_is_never_overwritten(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    path.write_bytes(b"users: [\n")
    with pytest.raises(UserStoreError, match="not valid YAML"):
        locked_update(path, lambda c: c)
    assert path.read_bytes() == b"users: [\n"


def test_an_exception_in_the_mutation_writes_nothing(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    locked_update(path, lambda c: UsersFile(blocked_usernames=["a"]))
    before = path.read_bytes()

    def fail(content: UsersFile) -> UsersFile:
        raise UserStoreError("refused")

    with pytest.raises(UserStoreError, match="refused"):
        locked_update(path, fail)
    assert path.read_bytes() == before


def test_stale_temp_files_are_removed_by_the_next_write(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    stale = tmp_path / ".users.yaml.tmp-99999-1"
    stale.write_bytes(b"half a fi")
    other = tmp_path / ".other.yaml.tmp-1-1"
    other.write_bytes(b"not ours")
    locked_update(path, lambda c: c)
    assert not stale.exists()
    assert other.exists()


def _append_in_a_loop(path_str: str, tag: str, names: int) -> None:
    path = Path(path_str)
    for i in range(names):
        locked_update(
            path,
            lambda c, i=i: UsersFile(
                users=c.users, blocked_usernames=[*c.blocked_usernames, f"{tag}-{i}"]
            ),
        )


def _rewrite_forever(path_str: str) -> None:
    """Write ever-new versions of a ~2 MB file; every entry of one version carries the same
    generation number, so a torn file would mix generations."""
    path = Path(path_str)
    generation = 0
    while True:
        generation += 1
        content = UsersFile(
            users=[
                UserEntry(id=f"local:u{i}", name=f"u{i}", display_name=f"g{generation}" + "x" * 400)
                for i in range(5000)
            ]
        )
        locked_update(path, lambda c, content=content: content)


def _fork() -> multiprocessing.context.ForkContext:
    return multiprocessing.get_context("fork")


def _start(process: multiprocessing.process.BaseProcess) -> None:
    # Python >= 3.12 warns about fork() while other threads run (an executor left by
    # another test, say); our children only write a file, so the warning does not apply.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        process.start()


def _die_at(path_str: str, point: str) -> None:
    """Write a new version but SIGKILL this process at ``point`` of the write."""
    real_write, real_fsync, real_replace = os.write, os.fsync, os.replace

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def write(fd: int, data: bytes | memoryview) -> int:
        if point == "write":
            real_write(fd, bytes(data)[: len(data) // 2])
            die()
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        if point == "fsync":
            die()
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        if point == "replace":
            die()
        real_replace(src, dst)

    os.write, os.fsync, os.replace = write, fsync, replace  # this child process only
    locked_update(Path(path_str), lambda c: UsersFile(blocked_usernames=["new"]))


@pytest.mark.parametrize("point", ["write", "fsync", "replace"])
def test_a_writer_killed_at_each_step_of_a_write_leaves_the_old_file(
    tmp_path: Path, point: str
) -> None:
    path = users_file(tmp_path)
    locked_update(path, lambda c: UsersFile(blocked_usernames=["old"]))
    writer = _fork().Process(target=_die_at, args=(str(path), point))
    _start(writer)
    writer.join(10)
    assert writer.exitcode == -signal.SIGKILL
    assert leftovers(tmp_path)  # it did die half-way, with its temp file written
    assert read_users_file(path)[0].blocked_usernames == ["old"]
    # Its lock died with it, and its temp file goes with the next write.
    locked_update(path, lambda c: UsersFile(blocked_usernames=["after"]))
    assert read_users_file(path)[0].blocked_usernames == ["after"]
    assert leftovers(tmp_path) == []


def test_a_writer_killed_at_random_moments_leaves_a_whole_file(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    locked_update(path, lambda c: UsersFile(blocked_usernames=["initial"]))
    ctx = _fork()
    for delay in (0.05, 0.11, 0.23, 0.31):
        writer = ctx.Process(target=_rewrite_forever, args=(str(path),))
        _start(writer)
        try:
            time.sleep(delay)
        finally:
            assert writer.pid is not None
            os.kill(writer.pid, signal.SIGKILL)
            writer.join(5)
        content, _ = read_users_file(path)  # parses: not torn
        generations = {u.display_name[:12].split("x")[0] for u in content.users}
        assert len(generations) <= 1
        if content.users:
            assert len(content.users) == 5000
    locked_update(path, lambda c: UsersFile(blocked_usernames=["after"]))
    assert read_users_file(path)[0].blocked_usernames == ["after"]
    assert leftovers(tmp_path) == []


def test_fifty_writers_in_processes_and_threads_lose_no_update(tmp_path: Path) -> None:
    import threading

    path = users_file(tmp_path)
    ctx = _fork()
    processes = [
        ctx.Process(target=_append_in_a_loop, args=(str(path), f"p{n}", 2)) for n in range(25)
    ]
    threads = [
        threading.Thread(target=_append_in_a_loop, args=(str(path), f"t{n}", 2)) for n in range(25)
    ]
    for p in processes:
        _start(p)
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for p in processes:
        p.join(30)
        assert p.exitcode == 0
    names = read_users_file(path)[0].blocked_usernames
    assert len(names) == 100
    assert len(set(names)) == 100


def test_temp_files_are_named_after_the_users_file() -> None:
    assert userfile._temp_prefix(Path("/x/users.yaml")) == ".users.yaml.tmp-"
