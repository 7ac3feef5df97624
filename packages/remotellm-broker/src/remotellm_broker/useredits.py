"""The edits the CLI and the portal make to users.yaml, as pure functions.

Each takes the file's content as it is under the write lock (``userfile.locked_update``)
and returns the new content, or raises ``UserStoreError`` saying why not; nothing here
touches the disk or the clock (``now`` is passed in), so ``UserStore`` stays a thin shell.
Names are matched against the current content, never a cached copy, so a concurrent
rename or delete cannot make an edit land on the wrong user.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec

from remotellm_broker.keys import display_prefix, hash_secret
from remotellm_broker.userfile import TokenEntry, UserEntry, UsersFile, UserStoreError

__all__ = [
    "add_connector_token",
    "add_local_user",
    "delete_user",
    "end_sessions",
    "record_gitlab_login",
    "resolve",
    "revoke_connector_token",
    "set_blocked",
    "set_key",
    "set_limits",
    "set_quotas",
    "valid_name",
]

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def valid_name(name: str) -> bool:
    """Names usable on the command line: GitLab-username-like, no ``:`` (ids have one)."""
    return _NAME_RE.fullmatch(name) is not None


def resolve(content: UsersFile, name: str) -> UserEntry:
    """The one user with this id, or else with this (case-insensitive) name."""
    for entry in content.users:
        if entry.id == name:
            return entry
    folded = name.casefold()
    matches = [u for u in content.users if u.name.casefold() == folded]
    if not matches:
        raise UserStoreError(f"no user named {name!r}")
    if len(matches) > 1:
        ids = ", ".join(u.id for u in matches)
        raise UserStoreError(f"{name!r} matches several users ({ids}); give the user id")
    return matches[0]


def add_local_user(content: UsersFile, name: str, key: str, now: str) -> UsersFile:
    if not valid_name(name):
        raise UserStoreError(
            f"invalid user name {name!r}: use letters, digits, '_', '.', '-' (max 64)"
        )
    user_id = "local:" + name
    if any(u.id == user_id for u in content.users):
        raise UserStoreError(f"user {name!r} already exists; use 'rotate' for a new key")
    entry = _with_key(UserEntry(id=user_id, name=name, created=now), key, now)
    return _replace(content, users=[*content.users, entry])


def set_key(content: UsersFile, name: str, key: str, now: str) -> UsersFile:
    """Give the user a new key; the old one is gone from the file."""
    user_id = resolve(content, name).id
    return _replace(content, users=_map_user(content, user_id, lambda e: _with_key(e, key, now)))


def set_blocked(content: UsersFile, name: str, *, blocked: bool) -> UsersFile:
    """(Un)block every user with this id or name. Blocking a name nobody has yet puts it on
    ``blocked_usernames`` (pre-block); unblocking also takes it off that list."""
    folded = name.casefold()
    matched = False
    users = []
    for entry in content.users:
        if entry.id == name or entry.name.casefold() == folded:
            matched = True
            entry = msgspec.structs.replace(entry, blocked=blocked)
        users.append(entry)
    names = [n for n in content.blocked_usernames if n.casefold() != folded]
    if blocked and not matched:
        if not valid_name(name):
            raise UserStoreError(f"invalid user name {name!r}")
        names.append(name)
    if not blocked and not matched and len(names) == len(content.blocked_usernames):
        raise UserStoreError(f"no user named {name!r}")
    return _replace(content, users=users, blocked_usernames=names)


def delete_user(content: UsersFile, name: str) -> UsersFile:
    user_id = resolve(content, name).id
    return _replace(content, users=[u for u in content.users if u.id != user_id])


def set_limits(
    content: UsersFile,
    name: str,
    *,
    rate_limit_rpm: int | None,
    rate_limit_burst: int | None,
    max_streams: int | None,
) -> UsersFile:
    """Per-user overrides (None = the broker-wide setting, 0 = unlimited)."""
    for value in (rate_limit_rpm, rate_limit_burst, max_streams):
        if value is not None and value < 0:
            raise UserStoreError("limits must be 0 (unlimited) or more")

    def change(entry: UserEntry) -> UserEntry:
        return msgspec.structs.replace(
            entry,
            rate_limit_rpm=rate_limit_rpm,
            rate_limit_burst=rate_limit_burst,
            max_streams=max_streams,
        )

    return _replace(content, users=_map_user(content, resolve(content, name).id, change))


def set_quotas(
    content: UsersFile, name: str, *, daily_tokens: int | None, monthly_tokens: int | None
) -> UsersFile:
    """Per-user token quotas (None = the broker-wide setting, 0 = no quota)."""
    for value in (daily_tokens, monthly_tokens):
        if value is not None and value < 0:
            raise UserStoreError("quotas must be 0 (none) or more")

    def change(entry: UserEntry) -> UserEntry:
        return msgspec.structs.replace(
            entry, quota_daily_tokens=daily_tokens, quota_monthly_tokens=monthly_tokens
        )

    return _replace(content, users=_map_user(content, resolve(content, name).id, change))


def record_gitlab_login(
    content: UsersFile, gitlab_id: int, username: str, display_name: str, now: str
) -> UsersFile:
    """Create ``gitlab:<id>`` at the first login; later refresh its names and login time.
    The GitLab id is the identity: a renamed GitLab user keeps the record and the key.

    A pre-block (``blocked_usernames``) that names this account, by its new username or by
    the one on record, is resolved here: the record itself becomes blocked and the name
    leaves the list, so the block follows the id through any later rename."""
    user_id = f"gitlab:{gitlab_id}"
    existing = next((u for u in content.users if u.id == user_id), None)
    names = {username.casefold()}
    if existing is not None:
        names.add(existing.name.casefold())
    pre_blocked = [n for n in content.blocked_usernames if n.casefold() in names]
    remaining = [n for n in content.blocked_usernames if n.casefold() not in names]
    if existing is None:
        entry = UserEntry(
            id=user_id,
            name=username,
            display_name=display_name,
            gitlab_id=gitlab_id,
            blocked=bool(pre_blocked),
            created=now,
            last_login=now,
        )
        return _replace(content, users=[*content.users, entry], blocked_usernames=remaining)

    def change(entry: UserEntry) -> UserEntry:
        return msgspec.structs.replace(
            entry,
            name=username,
            display_name=display_name,
            last_login=now,
            blocked=entry.blocked or bool(pre_blocked),
        )

    return _replace(content, users=_map_user(content, user_id, change), blocked_usernames=remaining)


def end_sessions(content: UsersFile, user_id: str) -> UsersFile:
    """Every portal session of ``user_id`` issued so far stops working (logout)."""
    if not any(u.id == user_id for u in content.users):
        raise UserStoreError(f"no user {user_id!r}")

    def change(entry: UserEntry) -> UserEntry:
        return msgspec.structs.replace(entry, session_epoch=entry.session_epoch + 1)

    return _replace(content, users=_map_user(content, user_id, change))


def add_connector_token(content: UsersFile, name: str, token: str, now: str) -> UsersFile:
    if not valid_name(name):
        raise UserStoreError(f"invalid token name {name!r}")
    if any(t.name == name for t in content.connector_tokens):
        raise UserStoreError(f"connector token {name!r} already exists; revoke it first")
    entry = TokenEntry(
        name=name, token_hash=hash_secret(token), token_prefix=display_prefix(token), created=now
    )
    return _replace(content, connector_tokens=[*content.connector_tokens, entry])


def revoke_connector_token(content: UsersFile, name: str) -> UsersFile:
    tokens = [t for t in content.connector_tokens if t.name != name]
    if len(tokens) == len(content.connector_tokens):
        raise UserStoreError(f"no connector token named {name!r}")
    return _replace(content, connector_tokens=tokens)


def _with_key(entry: UserEntry, key: str, now: str) -> UserEntry:
    return msgspec.structs.replace(
        entry, key_hash=hash_secret(key), key_prefix=display_prefix(key), key_created=now
    )


def _map_user(
    content: UsersFile, user_id: str, change: Callable[[UserEntry], UserEntry]
) -> list[UserEntry]:
    return [change(e) if e.id == user_id else e for e in content.users]


def _replace(content: UsersFile, **changes: object) -> UsersFile:
    return msgspec.structs.replace(content, **changes)
