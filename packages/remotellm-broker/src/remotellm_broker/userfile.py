"""users.yaml on disk: its schema, parsing, and crash-safe serialised writes.

The file is edited by three kinds of writer at once — the running broker (portal logins,
key rotation), ``remotellm-broker users …`` commands, and an operator's text editor — so:

* every programmatic write is a read-modify-write under an exclusive ``flock`` on a sibling
  ``users.yaml.lock`` file (separate processes) plus a process-wide thread lock (threads of
  one process; flock alone would do, but this keeps one process from waiting on itself);
* the new content goes to a temp file in the same directory, is fsynced, then
  ``os.replace``-d over the old file and the directory is fsynced: a reader, or a crash at
  any instant, sees the old file or the new one, never a torn one;
* a write that fails (disk full, read-only fs, …) removes its temp file, leaves the old file
  untouched and raises ``UserStoreError`` saying so;
* a file that does not parse or validate is never applied and never overwritten: the
  error names the line or field, and the caller keeps its last good state.

The broker notices changes with a cheap ``stat`` (``FileSignature``) and re-reads only then.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, NamedTuple

import msgspec
import yaml

__all__ = [
    "FILE_MODE",
    "FileSignature",
    "TokenEntry",
    "UserEntry",
    "UserStoreError",
    "UsersFile",
    "decode_users_file",
    "encode_users_file",
    "locked_update",
    "read_users_file",
    "signature_of",
    "write_atomically",
]

FILE_MODE = 0o600
FORMAT_VERSION = 1

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]

_HEADER = (
    "# remotellm-broker users file. Managed by `remotellm-broker users|tokens ...` and the\n"
    "# login portal; hand edits are picked up within a second (a broken file is ignored,\n"
    "# the broker keeps the last good state). Keys are stored only as sha256 hashes.\n"
    "# Format: docs/broker-users.md\n"
)


class UserStoreError(Exception):
    """The user store cannot do what was asked; the message says why and what is intact."""


class UserEntry(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """One user (one key at most) as stored in users.yaml."""

    id: Name
    name: Name
    display_name: str = ""
    gitlab_id: int | None = None
    blocked: bool = False
    created: str = ""
    last_login: str | None = None
    key_hash: str | None = None
    key_prefix: str | None = None
    key_created: str | None = None
    #: Token quotas (prompt + completion); None: the broker's default, 0: none.
    quota_daily_tokens: NonNegInt | None = None
    quota_monthly_tokens: NonNegInt | None = None
    rate_limit_rpm: NonNegInt | None = None
    rate_limit_burst: NonNegInt | None = None
    max_streams: NonNegInt | None = None
    #: Bumped when the user logs out of the portal: every session cookie issued before is dead.
    session_epoch: NonNegInt = 0


class TokenEntry(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """One connector token as stored in users.yaml."""

    name: Name
    token_hash: str
    token_prefix: str = ""
    created: str = ""


class UsersFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole file. ``blocked_usernames`` pre-blocks people who have no record yet."""

    version: int = FORMAT_VERSION
    users: list[UserEntry] = msgspec.field(default_factory=list)
    blocked_usernames: list[Name] = msgspec.field(default_factory=list)
    connector_tokens: list[TokenEntry] = msgspec.field(default_factory=list)


class FileSignature(NamedTuple):
    """What ``stat`` says about the file; any difference means "re-read it"."""

    device: int
    inode: int
    mtime_ns: int
    size: int


def signature_of(st: os.stat_result) -> FileSignature:
    return FileSignature(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


# libyaml when available: a file of thousands of users parses ~10x faster, and the broker
# parses it on every change.
try:
    from yaml import CSafeDumper as _SafeDumper
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as _SafeDumper  # type: ignore[assignment]
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _Loader(_SafeLoader):
    """Safe loader that leaves timestamps as strings (they round-trip unchanged)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def decode_users_file(data: bytes, path: Path) -> UsersFile:
    """Parse and validate; raises ``UserStoreError`` naming the line or the field."""
    try:
        raw = yaml.load(data, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise UserStoreError(f"{path} is not valid YAML{where}: {problem}") from None
    if raw is None:
        return UsersFile()
    try:
        parsed = msgspec.convert(raw, UsersFile)
    except msgspec.ValidationError as exc:
        raise UserStoreError(f"{path} is not a valid users file: {exc}") from None
    _check_consistency(parsed, path)
    return parsed


def _check_consistency(parsed: UsersFile, path: Path) -> None:
    if parsed.version != FORMAT_VERSION:
        raise UserStoreError(f"{path} has format version {parsed.version}; expected 1")
    seen_ids: set[str] = set()
    seen_hashes: set[str] = set()
    for user in parsed.users:
        if user.id in seen_ids:
            raise UserStoreError(f"{path}: user id {user.id!r} appears twice")
        seen_ids.add(user.id)
        if user.key_hash is not None:
            if user.key_hash in seen_hashes:
                raise UserStoreError(f"{path}: user {user.id!r} shares a key hash with another")
            seen_hashes.add(user.key_hash)
    names = [t.name for t in parsed.connector_tokens]
    if len(set(names)) != len(names):
        raise UserStoreError(f"{path}: a connector token name appears twice")


def encode_users_file(content: UsersFile) -> bytes:
    body = yaml.dump(
        msgspec.to_builtins(content),
        Dumper=_SafeDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1000,
    )
    return (_HEADER + body).encode("utf-8")


def read_users_file(path: Path) -> tuple[UsersFile, FileSignature | None]:
    """The parsed file and the signature of exactly the bytes parsed (None if absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return UsersFile(), None
    except OSError as exc:
        raise UserStoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        signature = signature_of(os.fstat(fd))
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UserStoreError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return decode_users_file(data, path), signature


# One lock per users file and process: flock serialises processes; this serialises threads
# before they reach flock, so a thread never queues behind flock on its own process.
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    key = os.path.abspath(path)
    with _thread_locks_guard:
        return _thread_locks.setdefault(key, threading.Lock())


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    with _thread_lock(path):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise UserStoreError(f"cannot open lock file {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the flock


def locked_update(
    path: Path,
    mutate: Callable[[UsersFile], UsersFile],
    written: Callable[[UsersFile], None] | None = None,
) -> UsersFile:
    """Read the current file, apply ``mutate``, write the result, call ``written``; all
    under the lock, so ``written`` callbacks run in the order the writes happened.

    Always re-reads the file under the lock (never trusts a cached copy) so no concurrent
    writer's change is lost. A broken file aborts the update rather than being overwritten.
    """
    path = Path(os.path.realpath(path))  # through a symlink: replace the file, keep the link
    with _exclusive(path):
        _remove_stale_temp_files(path)
        current, _ = read_users_file(path)
        updated = mutate(current)
        data = encode_users_file(updated)
        try:
            # Never write what we would refuse to read (an over-long GitLab name, say):
            # that would lock every later write out until someone fixed it by hand.
            decode_users_file(data, path)
        except UserStoreError as exc:
            raise UserStoreError(f"refusing to write an invalid users file: {exc}") from None
        write_atomically(path, data)
        if written is not None:
            written(updated)
        return updated


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _remove_stale_temp_files(path: Path) -> None:
    """Temp files left by a writer killed mid-write; safe to remove while we hold the lock."""
    prefix = _temp_prefix(path)
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if entry.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def write_atomically(path: Path, data: bytes) -> FileSignature:
    """Replace ``path`` with ``data`` (mode 0600) so that it is old or new, never torn.

    The caller must hold the lock (``locked_update``).
    """
    directory = path.parent
    tmp = directory / f"{_temp_prefix(path)}{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        try:
            os.fchmod(fd, FILE_MODE)  # O_CREAT's mode is masked by umask; be explicit
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            signature = signature_of(os.fstat(fd))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _write_error(path, exc) from None
    _fsync_directory(directory)
    return signature


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable; some filesystems refuse fsync on directories (harmless).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_error(path: Path, exc: OSError) -> UserStoreError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    return UserStoreError(f"cannot write {path}: {reason}; the old file is unchanged")
