"""The ``remotellm-broker`` command line: ``serve``, ``users …``, ``tokens …``, ``usage``.

The ``users``/``tokens`` commands edit users.yaml through the same locked, atomic writes as
the running broker, so they are safe while it runs; it picks the change up within a second.
A command that prints a secret prints it as the only line on stdout (``KEY=$(… users add
bob)`` works); everything else — notices, errors — goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
import structlog

from remotellm_broker.__about__ import __version__
from remotellm_broker.serve import serve
from remotellm_broker.usage_cli import usage
from remotellm_broker.users import UserRecord, UserStore, UserStoreError

T = TypeVar("T")

__all__ = ["main"]

USERS_FILE_ENV = "REMOTELLM_BROKER_USERS_FILE"

users_file_option = click.option(
    "--users-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("users.yaml"),
    show_default="./users.yaml",
    envvar=USERS_FILE_ENV,
    show_envvar=True,
    help="The users file the broker serves from.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="remotellm-broker")
def main() -> None:
    """Serve the OpenAI API for the LLMs your team's connectors share."""


main.add_command(serve)
main.add_command(usage)


def _open_store(users_file: Path) -> UserStore:
    # Log lines (a rejected file, …) must never mix with a key printed on stdout.
    if not structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    try:
        return UserStore(users_file)
    except UserStoreError as exc:
        raise click.ClickException(str(exc)) from None


def _run(action: Callable[[UserStore, str], T], users_file: Path, name: str) -> tuple[UserStore, T]:
    """Apply one store edit; a UserStoreError becomes the CLI's one-line error."""
    store = _open_store(users_file)
    try:
        return store, action(store, name)
    except UserStoreError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def users() -> None:
    """Manage API users and their keys in the users file."""


@users.command("add")
@click.argument("name")
@users_file_option
def users_add(name: str, users_file: Path) -> None:
    """Create user NAME and print their new API key (shown only this once)."""
    _, key = _run(UserStore.add_user, users_file, name)
    click.echo(key)


@users.command("rotate")
@click.argument("name")
@users_file_option
def users_rotate(name: str, users_file: Path) -> None:
    """Give NAME a new key and print it; the old key stops working at once."""
    _, key = _run(UserStore.rotate, users_file, name)
    click.echo(key)


@users.command("block")
@click.argument("name")
@users_file_option
def users_block(name: str, users_file: Path) -> None:
    """Block NAME (also a GitLab username that has not logged in yet)."""
    store, _ = _run(UserStore.block, users_file, name)
    if not store.find_users(name):
        click.echo(f"pre-blocked {name}: they are blocked when they first log in", err=True)
    else:
        click.echo(f"blocked {name}", err=True)


@users.command("unblock")
@click.argument("name")
@users_file_option
def users_unblock(name: str, users_file: Path) -> None:
    """Unblock NAME."""
    _run(UserStore.unblock, users_file, name)
    click.echo(f"unblocked {name}", err=True)


@users.command("delete")
@click.argument("name")
@users_file_option
def users_delete(name: str, users_file: Path) -> None:
    """Delete NAME; their key stops working at once."""
    _run(UserStore.delete, users_file, name)
    click.echo(f"deleted {name}", err=True)


_LIMIT = click.IntRange(min=0)


@users.command("limits")
@click.argument("name")
@click.option("--rpm", type=_LIMIT, default=None, help="Requests per minute (0 = unlimited).")
@click.option("--burst", type=_LIMIT, default=None, help="Burst size (0 = unlimited).")
@click.option(
    "--max-streams", type=_LIMIT, default=None, help="Concurrent streams (0 = unlimited)."
)
@users_file_option
def users_limits(
    name: str, rpm: int | None, burst: int | None, max_streams: int | None, users_file: Path
) -> None:
    """Set NAME's own limits; an option left out reverts to the broker-wide setting."""
    store = _open_store(users_file)
    try:
        store.set_limits(name, rate_limit_rpm=rpm, rate_limit_burst=burst, max_streams=max_streams)
    except UserStoreError as exc:
        raise click.ClickException(str(exc)) from None


@users.command("quota")
@click.argument("name")
@click.option("--daily", type=_LIMIT, default=None, help="Tokens per UTC day (0 = no quota).")
@click.option("--monthly", type=_LIMIT, default=None, help="Tokens per UTC month (0 = no quota).")
@users_file_option
def users_quota(name: str, daily: int | None, monthly: int | None, users_file: Path) -> None:
    """Set NAME's token quotas (prompt + completion); an option left out reverts to the
    broker-wide quota_daily_tokens / quota_monthly_tokens."""
    store = _open_store(users_file)
    try:
        store.set_quotas(name, daily_tokens=daily, monthly_tokens=monthly)
    except UserStoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"quotas of {name}: daily={_quota(daily)} monthly={_quota(monthly)}", err=True)


def _quota(value: int | None) -> str:
    return "default" if value is None else ("none" if value == 0 else f"{value:,}")


def _limits(record: UserRecord) -> str:
    parts = [
        f"{label}={value}"
        for label, value in (
            ("rpm", record.rate_limit_rpm),
            ("burst", record.rate_limit_burst),
            ("streams", record.max_streams),
            ("daily", record.quota_daily_tokens),
            ("monthly", record.quota_monthly_tokens),
        )
        if value is not None
    ]
    return ",".join(parts) or "-"


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user.")
@users_file_option
def users_list(as_json: bool, users_file: Path) -> None:
    """List users: name, id, status, key prefix, last login, limit overrides."""
    store = _open_store(users_file)
    records = store.list_users()
    if as_json:
        for record in records:
            click.echo(json.dumps({**record.__dict__, "has_key": record.has_key}))
        return
    rows = [("NAME", "ID", "STATUS", "KEY", "LAST LOGIN", "LIMITS")]
    rows += [
        (
            r.name,
            r.user_id,
            "blocked" if r.blocked else "active",
            r.key_prefix or "-",
            r.last_login or "-",
            _limits(r),
        )
        for r in records
    ]
    rows += [(n, "-", "pre-blocked", "-", "-", "-") for n in store.blocked_usernames()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@main.group()
def tokens() -> None:
    """Manage the tokens connectors use to attach to this broker."""


@tokens.command("create")
@click.argument("name")
@users_file_option
def tokens_create(name: str, users_file: Path) -> None:
    """Create connector token NAME and print it (shown only this once).

    The connector name NAME belongs to this token: no other token may attach under it. A
    token serves under one connector name, the first it attaches with.
    """
    _, token = _run(UserStore.create_connector_token, users_file, name)
    click.echo(token)


@tokens.command("list")
@users_file_option
def tokens_list(users_file: Path) -> None:
    """List connector tokens (name, prefix, created)."""
    store = _open_store(users_file)
    for record in store.list_connector_tokens():
        click.echo(f"{record.name}  {record.token_prefix}  {record.created}")


@tokens.command("revoke")
@click.argument("name")
@users_file_option
def tokens_revoke(name: str, users_file: Path) -> None:
    """Revoke connector token NAME and close its live links.

    A running broker closes them within a second; their streams in flight end with an
    error, and the token can no longer attach.
    """
    _run(UserStore.revoke_connector_token, users_file, name)
    click.echo(f"revoked {name}", err=True)
