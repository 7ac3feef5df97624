"""The user store: who may call the API, with which key, under which limits.

``UserStore`` keeps an immutable in-memory snapshot built from users.yaml (see
``userfile.py``) plus the service accounts configured in the environment. Key checks read
the snapshot only, so they never touch the disk and never see a half-applied change; the
broker calls ``reload_if_changed()`` every ``RELOAD_INTERVAL_S`` and a changed file is re-read and
swapped in whole. Writes (CLI commands, portal logins) go through ``userfile.locked_update``
and update the snapshot at once, so a key issued by this process works immediately.

Identities: ``local:<name>`` for users made with the CLI, ``gitlab:<id>`` for portal users
(the GitLab id is the identity, the username is for display and for the operator's
commands), ``env:<hash prefix>`` for environment service accounts. Blocking is by
username: ``block alice`` blocks every record named alice, and when there is none yet the
name goes to ``blocked_usernames`` so alice is blocked the moment she first logs in; that
login resolves the pre-block to her GitLab id, so renaming the account does not lift it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from remotellm_broker import useredits as edits
from remotellm_broker.keys import (
    generate_api_key,
    generate_connector_token,
    hash_secret,
    key_id_for_hash,
    parse_env_key,
    secrets_equal,
)
from remotellm_broker.useredits import valid_name
from remotellm_broker.userfile import (
    FileSignature,
    UserEntry,
    UsersFile,
    UserStoreError,
    locked_update,
    read_users_file,
    signature_of,
)

__all__ = [
    "RELOAD_INTERVAL_S",
    "ConnectorTokenRecord",
    "KeyIdentity",
    "UserRecord",
    "UserStore",
    "UserStoreError",
    "valid_name",
]

log = structlog.get_logger(__name__)

# The signature of "no file": distinct from every real one and from "nothing seen yet".
_ABSENT = FileSignature(-1, -1, -1, -1)

#: How often the broker polls users.yaml. The promise is "edits take effect within a second",
#: so the period plus one reload must stay under 1 s; each poll is a wake-up and a stat, the
#: bulk of an idle broker's CPU (0.5 s cost 0.058 % of a core; issue 7). 0.8 s leaves 0.2 s
#: for the reload and a busy machine's scheduling.
RELOAD_INTERVAL_S = 0.8

# Longer "keys" are refused before hashing: no stored secret is anywhere near this long.
MAX_SECRET_LENGTH = 1024


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class KeyIdentity:
    """Who a key belongs to, as ``authenticate`` reports it. ``None`` overrides mean "use
    the broker-wide setting"; a blocked identity must be refused with 403."""

    user_id: str
    key_id: str
    name: str
    blocked: bool
    quota_daily_tokens: int | None = None
    quota_monthly_tokens: int | None = None
    rate_limit_rpm: int | None = None
    rate_limit_burst: int | None = None
    max_streams: int | None = None


@dataclass(frozen=True)
class UserRecord:
    """A user as the CLI and the portal see it (never the key, nor its hash)."""

    user_id: str
    name: str
    display_name: str
    gitlab_id: int | None
    blocked: bool
    created: str
    last_login: str | None
    key_id: str | None
    key_prefix: str | None
    key_created: str | None
    quota_daily_tokens: int | None
    quota_monthly_tokens: int | None
    rate_limit_rpm: int | None
    rate_limit_burst: int | None
    max_streams: int | None
    #: Portal sessions carry the epoch they were issued at; logout bumps it.
    session_epoch: int = 0

    @property
    def has_key(self) -> bool:
        return self.key_id is not None


@dataclass(frozen=True)
class ConnectorTokenRecord:
    name: str
    token_prefix: str
    created: str


@dataclass(frozen=True)
class _Snapshot:
    """Everything ``authenticate`` needs, built once per file version; never mutated."""

    content: UsersFile
    by_key_id: dict[str, tuple[str, KeyIdentity]]
    by_token_hash: dict[str, str]
    users: dict[str, UserRecord]


def _is_blocked(entry: UserEntry, blocked_names: frozenset[str]) -> bool:
    return entry.blocked or entry.name.casefold() in blocked_names


def _record(entry: UserEntry, blocked_names: frozenset[str]) -> UserRecord:
    return UserRecord(
        user_id=entry.id,
        name=entry.name,
        display_name=entry.display_name,
        gitlab_id=entry.gitlab_id,
        blocked=_is_blocked(entry, blocked_names),
        created=entry.created,
        last_login=entry.last_login,
        key_id=key_id_for_hash(entry.key_hash) if entry.key_hash else None,
        key_prefix=entry.key_prefix,
        key_created=entry.key_created,
        quota_daily_tokens=entry.quota_daily_tokens,
        quota_monthly_tokens=entry.quota_monthly_tokens,
        rate_limit_rpm=entry.rate_limit_rpm,
        rate_limit_burst=entry.rate_limit_burst,
        max_streams=entry.max_streams,
        session_epoch=entry.session_epoch,
    )


class UserStore:
    """API keys, users and connector tokens backed by a users.yaml file.

    Thread-safe: reads use an immutable snapshot, writes are serialised by
    ``userfile.locked_update`` (threads and processes).
    """

    def __init__(
        self,
        path: Path,
        *,
        env_api_keys: Sequence[str] = (),
        env_connector_tokens: Sequence[str] = (),
    ) -> None:
        """Load the file (absent = empty). Raises ``UserStoreError`` if it is broken, or if
        an environment key is malformed: there is no last good state to fall back on."""
        self.path = Path(path)
        try:
            self._env_keys = [parse_env_key(k) for k in env_api_keys]
            self._env_tokens = [
                parse_env_key(t, name_prefix="env-token-") for t in env_connector_tokens
            ]
        except ValueError as exc:
            raise UserStoreError(f"invalid service key in the environment: {exc}") from None
        self._callbacks: list[Callable[[], None]] = []
        self._state_lock = threading.Lock()
        content, signature = read_users_file(self.path)
        self._snapshot = self._build(content)
        self._signature = signature or _ABSENT
        self._bad_signature: FileSignature | None = None
        self._generation = 0  # bumped by every write of this process

    # -- reading -------------------------------------------------------------------------

    def authenticate(self, key: str) -> KeyIdentity | None:
        """The identity owning ``key``, or None if no such key.

        The lookup is a dict probe by the first 64 bits of the key's SHA-256 (the key id),
        then a constant-time ``hmac.compare_digest`` of the full hash. The dict probe is not
        constant-time, and need not be: its timing can at most reveal something about the
        *hash* of the attacker's guess, and steering guesses towards a stored hash needs a
        SHA-256 preimage of a 128-bit random key. No comparison ever touches the key itself.
        """
        if len(key) > MAX_SECRET_LENGTH:
            return None
        digest = hash_secret(key)
        found = self._snapshot.by_key_id.get(key_id_for_hash(digest))
        if found is None:
            return None
        stored_hash, identity = found
        return identity if secrets_equal(stored_hash, digest) else None

    def check_connector_token(self, token: str) -> str | None:
        """The name of the connector token, or None."""
        if len(token) > MAX_SECRET_LENGTH:
            return None
        return self._snapshot.by_token_hash.get(hash_secret(token))

    def list_users(self) -> list[UserRecord]:
        return sorted(self._snapshot.users.values(), key=lambda r: (r.name.casefold(), r.user_id))

    def get_user(self, user_id: str) -> UserRecord | None:
        return self._snapshot.users.get(user_id)

    def find_users(self, name_or_id: str) -> list[UserRecord]:
        """Records whose id equals, or whose name matches (case-insensitively), the argument."""
        snapshot = self._snapshot
        if name_or_id in snapshot.users:
            return [snapshot.users[name_or_id]]
        folded = name_or_id.casefold()
        return [r for r in self.list_users() if r.name.casefold() == folded]

    def blocked_usernames(self) -> list[str]:
        """Usernames pre-blocked before any record with that name existed."""
        return list(self._snapshot.content.blocked_usernames)

    def list_connector_tokens(self) -> list[ConnectorTokenRecord]:
        return [
            ConnectorTokenRecord(t.name, t.token_prefix, t.created)
            for t in self._snapshot.content.connector_tokens
        ]

    # -- reloading -----------------------------------------------------------------------

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from ``reload_if_changed`` after the users changed, whoever
        changed them (this process, a CLI command, a hand edit). Always called from the
        thread that polls ``reload_if_changed`` (the broker's event loop)."""
        self._callbacks.append(callback)

    def reload_if_changed(self) -> bool:
        """Re-read the file if ``stat`` says it changed; True if a new state was applied.

        A file that fails to parse is not applied: one log line per broken version, and the
        last good state keeps serving.
        """
        try:
            signature = signature_of(self.path.stat())
        except FileNotFoundError:
            signature = _ABSENT
        except OSError as exc:
            log.warning("users_file_unreadable", path=str(self.path), error=exc.strerror)
            return False
        if signature == self._signature or signature == self._bad_signature:
            return False
        generation = self._generation
        try:
            content, read_signature = read_users_file(self.path)
        except UserStoreError as exc:
            self._bad_signature = signature
            log.error("users_file_rejected", path=str(self.path), error=str(exc))
            return False
        with self._state_lock:
            if generation != self._generation:
                # This process wrote meanwhile and its snapshot is newer than what we read;
                # keep it, and leave the signature stale so the next poll reads again.
                return False
            self._snapshot = self._build(content)
            self._signature = read_signature or _ABSENT
            self._bad_signature = None
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                log.exception("users_on_change_callback_failed")
        return True

    def _build(self, content: UsersFile) -> _Snapshot:
        blocked_names = frozenset(n.casefold() for n in content.blocked_usernames)
        by_key: dict[str, tuple[str, KeyIdentity]] = {}
        for env_key in self._env_keys:
            key_id = key_id_for_hash(env_key.secret_hash)
            by_key[key_id] = (
                env_key.secret_hash,
                KeyIdentity(
                    user_id="env:" + env_key.name.removeprefix("env-"),
                    key_id=key_id,
                    name=env_key.name,
                    blocked=env_key.name.casefold() in blocked_names,
                ),
            )
        users: dict[str, UserRecord] = {}
        for entry in content.users:
            record = _record(entry, blocked_names)
            users[entry.id] = record
            if entry.key_hash is not None and record.key_id is not None:
                # setdefault: an environment service account wins over a file entry with
                # the same key (2**-64 odds for distinct keys; the same key pasted twice).
                by_key.setdefault(
                    record.key_id,
                    (
                        entry.key_hash,
                        KeyIdentity(
                            user_id=entry.id,
                            key_id=record.key_id,
                            name=entry.name,
                            blocked=record.blocked,
                            quota_daily_tokens=entry.quota_daily_tokens,
                            quota_monthly_tokens=entry.quota_monthly_tokens,
                            rate_limit_rpm=entry.rate_limit_rpm,
                            rate_limit_burst=entry.rate_limit_burst,
                            max_streams=entry.max_streams,
                        ),
                    ),
                )
        by_token = {t.secret_hash: t.name for t in self._env_tokens}
        by_token.update({t.token_hash: t.name for t in content.connector_tokens})
        return _Snapshot(content, by_key, by_token, users)

    # -- writing -------------------------------------------------------------------------

    def _update(self, mutate: Callable[[UsersFile], UsersFile]) -> UsersFile:
        def written(content: UsersFile) -> None:
            # Under the file lock, so snapshots are swapped in the order of the writes.
            snapshot = self._build(content)
            with self._state_lock:
                self._snapshot = snapshot
                self._generation += 1
                # self._signature stays as it was: the next reload_if_changed sees a new
                # file, re-reads it and runs the on_change callbacks in the polling thread.

        return locked_update(self.path, mutate, written)

    def add_user(self, name: str) -> str:
        """Create ``local:<name>`` with a new key; returns the key (shown once)."""
        key = generate_api_key()
        self._update(lambda c: edits.add_local_user(c, name, key, _now()))
        return key

    def rotate(self, name: str) -> str:
        """A new key for the user named (or with id) ``name``; the old key stops at once."""
        key = generate_api_key()
        self._update(lambda c: edits.set_key(c, name, key, _now()))
        return key

    def issue_key_for(self, user_id: str) -> str:
        """A new key for ``user_id``, replacing any old one (which stops working at once)."""
        return self.rotate(user_id)

    def block(self, name: str) -> None:
        """Block every user with this name (or id); with none, pre-block the name."""
        self._update(lambda c: edits.set_blocked(c, name, blocked=True))

    def unblock(self, name: str) -> None:
        """Unblock every user with this name (or id) and lift a pre-block of it."""
        self._update(lambda c: edits.set_blocked(c, name, blocked=False))

    def delete(self, name: str) -> None:
        """Delete the user named (or with id) ``name``; their key stops at once."""
        self._update(lambda c: edits.delete_user(c, name))

    def set_limits(
        self,
        name: str,
        *,
        rate_limit_rpm: int | None,
        rate_limit_burst: int | None,
        max_streams: int | None,
    ) -> None:
        """Per-user overrides (None = broker default, 0 = unlimited)."""
        self._update(
            lambda c: edits.set_limits(
                c,
                name,
                rate_limit_rpm=rate_limit_rpm,
                rate_limit_burst=rate_limit_burst,
                max_streams=max_streams,
            )
        )

    def set_quotas(
        self, name: str, *, daily_tokens: int | None, monthly_tokens: int | None
    ) -> None:
        """Per-user token quotas (None = broker default, 0 = no quota)."""
        self._update(
            lambda c: edits.set_quotas(
                c, name, daily_tokens=daily_tokens, monthly_tokens=monthly_tokens
            )
        )

    def upsert_gitlab_user(self, gitlab_id: int, username: str, display_name: str) -> UserRecord:
        """Record a portal login: create ``gitlab:<id>`` or refresh its names and login
        time. Does not issue a key (``issue_key_for`` does). A pre-blocked username applies.
        """
        self._update(
            lambda c: edits.record_gitlab_login(c, gitlab_id, username, display_name, _now())
        )
        record = self.get_user(f"gitlab:{gitlab_id}")
        if record is None:  # pragma: no cover - we just wrote it
            raise UserStoreError(f"user gitlab:{gitlab_id} vanished after being written")
        return record

    def end_sessions(self, user_id: str) -> None:
        """Log ``user_id`` out of the portal everywhere: older session cookies stop working."""
        self._update(lambda c: edits.end_sessions(c, user_id))

    def create_connector_token(self, name: str) -> str:
        """A new connector token called ``name``; returns it (shown once)."""
        token = generate_connector_token()
        self._update(lambda c: edits.add_connector_token(c, name, token, _now()))
        return token

    def revoke_connector_token(self, name: str) -> None:
        self._update(lambda c: edits.revoke_connector_token(c, name))
