"""Broker settings: one validated ``BrokerSettings`` from flags, environment, file, defaults.

Precedence, highest first: command-line flags (``overrides``), environment variables
``REMOTELLM_BROKER_<FIELD>``, the YAML config file, the defaults below. Everything is
validated by msgspec once, at start-up; a bad value raises ``ConfigError`` naming the
setting, where it came from and the offending value (secrets are never echoed), so the
broker stops before it listens on anything.

Secrets (``SECRET_FIELDS``) may also come from ``REMOTELLM_BROKER_<FIELD>_FILE`` naming a
file that holds them (Docker/Kubernetes secrets, systemd credentials) and are refused as
flags, because flags show up in ``ps``. List settings read from the environment or a file
are comma-separated (a secrets file may also put one entry per line).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from remotellm_broker.keys import parse_env_key

__all__ = [
    "ENV_PREFIX",
    "LIST_FIELDS",
    "PORTAL_FIELDS",
    "SECRET_FIELDS",
    "BrokerSettings",
    "ConfigError",
    "env_name",
    "load_settings",
]

ENV_PREFIX = "REMOTELLM_BROKER_"

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]
PosFloat = Annotated[float, msgspec.Meta(gt=0)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Secret = Annotated[str, msgspec.Meta(min_length=32)]
#: A web origin as browsers send it (scheme, host, optional port; no path), or ``*``.
_HOST = r"([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])"
Origin = Annotated[str, msgspec.Meta(pattern=rf"^(\*|https?://{_HOST}(:[0-9]{{1,5}})?)$")]


class ConfigError(Exception):
    """A setting is missing, unknown or invalid; the message names it and its source."""


class BrokerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the broker process is configured with (see docs/broker-users.md)."""

    host: NonEmpty = "127.0.0.1"
    port: Port = 8000
    health_host: NonEmpty = "127.0.0.1"
    health_port: Port = 8080
    users_file: NonEmpty = "./users.yaml"
    public_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+")] | None = None
    connector_tokens: list[str] = msgspec.field(default_factory=list)
    api_keys: list[str] = msgspec.field(default_factory=list)
    rate_limit_rpm: NonNegInt = 600
    rate_limit_burst: NonNegInt = 100
    max_streams_per_key: NonNegInt = 64
    # -- usage records and quotas (docs/usage.md) ----------------------------------------
    #: The usage database (SQLite); default ``usage.db`` in the users file's directory.
    usage_db: NonEmpty | None = None
    #: Usage records older than this many days are deleted (hourly).
    usage_retention_days: PosInt = 400
    #: Records are committed in batches at most this many seconds apart; a killed broker
    #: loses at most this interval's records.
    usage_flush_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    #: Records waiting for the writer; past this they are dropped (counted, one warning).
    usage_queue_max: PosInt = 100_000
    #: Cap on the database file in MB (0: none); past it records are dropped as on a full disk.
    usage_max_db_mb: NonNegInt = 0
    #: Default tokens (prompt + completion) per user per UTC day; 0: no quota.
    quota_daily_tokens: NonNegInt = 0
    #: Default tokens (prompt + completion) per user per UTC month; 0: no quota.
    quota_monthly_tokens: NonNegInt = 0
    #: GitLab user ids of the portal's admins.
    admin_gitlab_ids: list[PosInt] = msgspec.field(default_factory=list)
    #: GitLab groups (full paths) whose members are the portal's admins.
    admin_gitlab_groups: list[NonEmpty] = msgspec.field(default_factory=list)
    max_body_bytes: PosInt = 16 * 1024 * 1024
    #: Request-body bytes the broker holds at once, over all requests (a body is held from
    #: its first byte until its answer starts); a body that does not fit gets HTTP 503 with
    #: `Retry-After`. At least `max_body_bytes`.
    max_body_bytes_in_flight: PosInt = 256 * 1024 * 1024
    #: Seconds a connection has to send a complete request line and headers, counted from
    #: when it opened or its last answer ended; also how long an idle keep-alive connection
    #: stays open. Slower clients are disconnected.
    header_timeout_s: PosFloat = 30.0
    #: Seconds to receive a whole request body, else HTTP 408 and the connection is closed.
    #: Raise it for big bodies over slow uplinks (16 MiB at 1 Mbit/s needs about 135 s).
    body_timeout_s: PosFloat = 60.0
    queue_timeout_s: PosFloat = 30.0
    queue_max: NonNegInt = 1024
    attach_wait_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    model_memory_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    keepalive_interval_s: PosFloat = 15.0
    stall_timeout_s: PosFloat = 120.0
    stream_window: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024
    shutdown_timeout: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    request_timeout_s: PosFloat = 600.0
    #: Relay links one connector token may hold at once, including links still in their
    #: handshake; more are refused with 429. Room for one link to each broker replica.
    max_links_per_token: PosInt = 8
    #: Models one connector may announce; entries beyond it are left out (with a warning).
    max_models_per_connector: PosInt = 256
    #: Model lists (`hello` and `models` frames) a connector token may send per minute,
    #: reconnects included; one more closes the link with 1008.
    model_announcements_per_minute: PosInt = 30
    #: Web origins (``https://app.example.com``, or ``*``) whose pages may call the API.
    cors_allow_origins: list[Origin] = msgspec.field(default_factory=list)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    #: `auto`: uvloop when the `[uvloop]` extra is installed, else asyncio's own loop;
    #: `asyncio` opts out; `uvloop` refuses to start without it.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    gitlab_url: NonEmpty = "https://gitlab.com"
    gitlab_client_id: NonEmpty | None = None
    gitlab_client_secret: NonEmpty | None = None
    session_secret: Secret | None = None
    #: GitLab groups whose members may get a key from the portal, by full path (``acme``,
    #: ``acme/team-a``); a group admits the members of its subgroups too.
    portal_allowed_groups: list[str] = msgspec.field(default_factory=list)
    #: GitLab users who may get a key from the portal: ``gitlab:123`` (the user id, which
    #: survives renames) or a username.
    portal_allowed_users: list[str] = msgspec.field(default_factory=list)
    #: Open the portal to every account of ``gitlab_url`` (on gitlab.com: anyone on the
    #: internet). Without it, a portal with no allowed group or user refuses to start.
    portal_allow_any_gitlab_user: bool = False

    @property
    def portal_enabled(self) -> bool:
        """True when GitLab login is fully configured (``load_settings`` refuses half)."""
        return all(getattr(self, field) for field in PORTAL_REQUIRED)

    def __repr__(self) -> str:
        # Settings get logged and shown in tracebacks: never print the secrets.
        parts = []
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if field in SECRET_FIELDS and value:
                value = f"<{len(value)} secrets>" if isinstance(value, list) else "<secret>"
                parts.append(f"{field}={value}")
            else:
                parts.append(f"{field}={value!r}")
        return f"BrokerSettings({', '.join(parts)})"


FIELDS: tuple[str, ...] = BrokerSettings.__struct_fields__
SECRET_FIELDS = frozenset(
    {"connector_tokens", "api_keys", "gitlab_client_secret", "session_secret"}
)
LIST_FIELDS = frozenset(
    {
        "connector_tokens",
        "api_keys",
        "portal_allowed_groups",
        "portal_allowed_users",
        "cors_allow_origins",
    }
)
# Setting any of these turns the portal on, so all of PORTAL_REQUIRED must be present
# (public_url too: GitLab must send the browser back to an address the operator chose).
PORTAL_FIELDS = ("gitlab_url", "gitlab_client_id", "gitlab_client_secret", "session_secret")
PORTAL_REQUIRED = ("gitlab_client_id", "gitlab_client_secret", "session_secret", "public_url")
_LOWERCASE_FIELDS = frozenset({"log_format", "log_level", "event_loop"})
LIST_FIELDS |= {"admin_gitlab_ids", "admin_gitlab_groups"}  # issue 17: the portal's admins


def env_name(field: str) -> str:
    """``port`` → ``REMOTELLM_BROKER_PORT``."""
    return ENV_PREFIX + field.upper()


def load_settings(
    config_file: Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
) -> BrokerSettings:
    """Merge the four layers and validate; raises ``ConfigError``.

    ``overrides`` holds flag values by field name; ``None`` means "flag not given", so a
    click command can pass its parameters straight through.
    """
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        for field, value in _read_config_file(config_file).items():
            values[field] = _split_list(value) if field in LIST_FIELDS else value
            sources[field] = f"{field} in {config_file}"
    for field in FIELDS:
        found = _from_env(field, env)
        if found is not None:
            values[field], sources[field] = found
    for field, value in overrides.items():
        if field not in FIELDS:
            raise ConfigError(f"unknown setting {field!r}")
        if value is None:
            continue
        if field in SECRET_FIELDS:
            raise ConfigError(
                f"{field} is a secret and cannot be given as a command-line flag "
                f"(flags are visible in ps); use {env_name(field)} or {env_name(field)}_FILE"
            )
        if field in LIST_FIELDS:
            value = _split_list(value)
        values[field] = str(value) if isinstance(value, Path) else value
        sources[field] = "--" + field.replace("_", "-")
    for field in _LOWERCASE_FIELDS:
        if isinstance(values.get(field), str):
            values[field] = str(values[field]).strip().lower()
    settings = _validate(values, sources)
    _check_body_budget(settings, sources)
    _check_service_keys(settings, sources)
    _check_portal(settings, sources)
    _check_portal_rules(settings, sources)
    return settings


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    unknown = sorted(str(k) for k in data if k not in FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} in config file {path}")
    return {str(k): v for k, v in data.items()}


def _from_env(field: str, env: Mapping[str, str]) -> tuple[object, str] | None:
    name = env_name(field)
    direct = env.get(name)
    file_name = name + "_FILE" if field in SECRET_FIELDS else None
    file_path = env.get(file_name) if file_name else None
    if direct is not None and file_path is not None:
        raise ConfigError(f"both {name} and {file_name} are set; use only one")
    if file_path is not None:
        try:
            raw = Path(file_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read {file_name}={file_path}: {exc.strerror or exc}"
            ) from None
        value: object = _split_list(raw) if field in LIST_FIELDS else raw.strip()
        return value, f"{file_name}={file_path}"
    if direct is None:
        return None
    if field in LIST_FIELDS:
        return _split_list(direct), name
    return direct, name


def _split_list(value: object) -> object:
    """Comma- or newline-separated text → list of non-empty stripped items."""
    if not isinstance(value, str):
        return value
    items = value.replace("\n", ",").split(",")
    return [item.strip() for item in items if item.strip()]


def _validate(values: dict[str, object], sources: dict[str, str]) -> BrokerSettings:
    try:
        return msgspec.convert(values, BrokerSettings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = _field_from_error(message)
        if field is None:
            raise ConfigError(f"invalid configuration: {message}") from None
        shown = "<secret>" if field in SECRET_FIELDS else repr(values.get(field))
        reason = message.split(" - at ", 1)[0]
        raise ConfigError(
            f"invalid value for {field} from {sources.get(field, 'defaults')}: {shown} ({reason})"
        ) from None


def _field_from_error(message: str) -> str | None:
    # msgspec reports the path as "... - at `$.field`" or "... - at `$.field[0]`".
    marker = "at `$."
    start = message.rfind(marker)
    if start < 0:
        return None
    rest = message[start + len(marker) :]
    name = rest.split("`", 1)[0].split("[", 1)[0].split(".", 1)[0]
    return name if name in FIELDS else None


def _check_body_budget(settings: BrokerSettings, sources: dict[str, str]) -> None:
    if settings.max_body_bytes_in_flight < settings.max_body_bytes:
        where = sources.get("max_body_bytes_in_flight", "defaults")
        raise ConfigError(
            f"invalid value for max_body_bytes_in_flight from {where}: "
            f"{settings.max_body_bytes_in_flight} is less than max_body_bytes "
            f"({settings.max_body_bytes}), so a body of the allowed size could never fit"
        )


def _check_service_keys(settings: BrokerSettings, sources: dict[str, str]) -> None:
    for field in ("api_keys", "connector_tokens"):
        for index, entry in enumerate(getattr(settings, field)):
            try:
                parse_env_key(entry)
            except ValueError as exc:
                raise ConfigError(
                    f"invalid value for {field} from {sources.get(field, 'defaults')}: "
                    f"entry {index + 1}: {exc}"
                ) from None


# A GitLab namespace path: segments of letters, digits, '_', '.', '-' joined by '/'.
_GROUP_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
# ``gitlab:<id>``, or a GitLab username (never all digits here: that is what gitlab:<id> is for).
_ALLOWED_USER = re.compile(r"gitlab:[1-9][0-9]{0,18}|[A-Za-z0-9_.-]*[A-Za-z_.-][A-Za-z0-9_.-]*")


def _check_portal_rules(settings: BrokerSettings, sources: dict[str, str]) -> None:
    checks = (
        ("portal_allowed_groups", _GROUP_PATH, "a GitLab group's full path, like acme/team-a"),
        ("portal_allowed_users", _ALLOWED_USER, "gitlab:<user id> (e.g. gitlab:123) or a username"),
    )
    for field, pattern, expected in checks:
        for entry in getattr(settings, field):
            if pattern.fullmatch(entry) is None:
                raise ConfigError(
                    f"invalid value for {field} from {sources.get(field, 'defaults')}: "
                    f"entry {entry!r} is not {expected}"
                )


def _check_portal(settings: BrokerSettings, sources: dict[str, str]) -> None:
    defaults = BrokerSettings()
    configured = [
        f
        for f in PORTAL_FIELDS
        if f in sources and getattr(settings, f) and getattr(settings, f) != getattr(defaults, f)
    ]
    if not configured:
        return
    missing = [f for f in PORTAL_REQUIRED if not getattr(settings, f)]
    if not missing and not (
        settings.portal_allowed_groups
        or settings.portal_allowed_users
        or settings.portal_allow_any_gitlab_user
    ):
        raise ConfigError(
            f"the GitLab login portal has no access rule: every account on "
            f"{settings.gitlab_url} would get an API key. Set portal_allowed_groups "
            f"({env_name('portal_allowed_groups')}, --portal-allowed-groups) or "
            f"portal_allowed_users ({env_name('portal_allowed_users')}), or, to open it to "
            f"every user of this GitLab on purpose, portal_allow_any_gitlab_user: true "
            f"({env_name('portal_allow_any_gitlab_user')}=true, --portal-allow-any-gitlab-user)"
        )
    if missing:
        raise ConfigError(
            f"the GitLab login portal is half-configured: {', '.join(configured)} "
            f"set but {missing[0]} missing (set {env_name(missing[0])}"
            + ("" if missing[0] not in SECRET_FIELDS else f" or {env_name(missing[0])}_FILE")
            + "; or unset the others to run without the portal)"
        )
