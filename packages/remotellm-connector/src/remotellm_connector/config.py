"""The connector's settings: one frozen msgspec Struct, merged from four layers.

Precedence, highest first: command-line flags, environment variables
``REMOTELLM_CONNECTOR_<FIELD>``, the YAML file (``--config``), the defaults below. Each value is
converted and checked on its own, so a bad one stops start-up with a single message that names
the field, the value and where it came from; an owner leaving the daemon for months should not
have to read a traceback to find a typo.

Secrets never come from flags (they would show in ``ps``): the relay token comes from
``REMOTELLM_CONNECTOR_TOKEN`` or the file named by ``token_file``; the optional key for an LLM
server started with ``--api-key`` from ``REMOTELLM_CONNECTOR_LLM_API_KEY``.
"""

import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "ConnectorSettings",
    "data_dir",
    "load_settings",
    "normalize_broker_url",
    "normalize_llm_url",
    "read_token",
]

ENV_PREFIX = "REMOTELLM_CONNECTOR_"

#: Where a broker's relay endpoint lives when the owner gives only ``https://host``.
RELAY_PATH = "/v1/relay"


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the field and the value."""


class ConnectorSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of ``remotellm-connector run`` and ``check``."""

    broker_url: str | None = None
    #: None: the first local LLM server that answers (Ollama, llama.cpp, vLLM, LM Studio).
    llm_url: str | None = None
    name: str = ""
    health_host: str = "127.0.0.1"
    #: Not 8080 (llama-server), 8000 (vLLM), 11434 (Ollama) or 1234 (LM Studio): the health
    #: server runs on the machine of the LLM server it fronts.
    health_port: int = 9180
    #: Concurrent requests this connector serves (announced to the broker); unset: from the
    #: LLM server, 2 x llama.cpp's slots, else 256 (docs/connector.md, capacity.py).
    max_streams: int | None = None
    #: Exit non-zero after this many failed connection attempts in a row; 0 retries forever.
    max_retries: int = 0
    token_file: str | None = None
    # -- owner's policy ---------------------------------------------------------------------
    #: Qualified user ids (``gitlab:42``, ``local:alice``) allowed to use this GPU; empty = all.
    allowed_users: list[str] = msgspec.field(default_factory=list)
    #: Requests per minute per user (token bucket refill); 0 = unlimited.
    user_rate_limit_rpm: int = 0
    #: Bucket size: requests a user may send at once; 0 = same as the rpm.
    user_rate_limit_burst: int = 0
    #: Concurrent streams per user; 0 = only ``max_streams`` applies.
    user_max_streams: int = 0
    # -- usage records (docs/usage.md) -------------------------------------------------------
    #: Directory of the usage records (``usage.db``); default
    #: ``$XDG_DATA_HOME/remotellm-connector`` (``~/.local/share/remotellm-connector``).
    data_dir: str | None = None
    #: Usage records older than this many days are deleted; 0 keeps no records at all.
    usage_retention_days: int = 400
    # -- timing ------------------------------------------------------------------------------
    shutdown_grace_s: float = 30.0
    models_refresh_s: float = 30.0
    #: While the LLM server does not answer, how often it is probed (its models stay known,
    #: marked unavailable, and are announced available again within about this long).
    llm_probe_interval_s: float = 1.0
    llm_connect_timeout_s: float = 5.0
    #: Longest silence from the LLM (prefill before the first byte, gap between chunks).
    llm_read_timeout_s: float = 300.0
    #: WebSocket ping period and pong deadline: a dead link is noticed within their sum plus
    #: the 2 s close timeout (14 s by default).
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 7.0
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: `auto`: uvloop when the `[uvloop]` extra is installed, else asyncio's own loop;
    #: `asyncio` opts out; `uvloop` refuses to start without it.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # -- secrets: environment or file only, never a flag or the YAML file ---------------------
    token: str | None = None
    llm_api_key: str | None = None

    def __repr__(self) -> str:
        # Never print secrets, whatever logs or tracebacks show a settings object.
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f not in _SECRETS}
        return f"ConnectorSettings({shown})"


_SECRETS = frozenset({"token", "llm_api_key"})
_FILE_FORBIDDEN = _SECRETS
_FIELDS: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(ConnectorSettings)}


def load_settings(
    config_file: Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
) -> ConnectorSettings:
    """Merge flags (``overrides``, None = not given) > ``env`` > ``config_file`` > defaults."""
    layers: dict[str, tuple[object, str]] = {}
    if config_file is not None:
        for key, value in _read_yaml(config_file).items():
            layers[key] = (value, f"{config_file}")
    for key in _FIELDS:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None and raw != "":
            parsed: object = raw
            if key == "allowed_users":
                parsed = [part.strip() for part in raw.split(",") if part.strip()]
            layers[key] = (parsed, ENV_PREFIX + key.upper())
    for key, value in overrides.items():
        if value is not None:
            if key not in _FIELDS:
                raise ConfigError(f"unknown setting {key!r}")
            layers[key] = (value, "--" + key.replace("_", "-"))
    values: dict[str, Any] = {k: _convert(k, v, source) for k, (v, source) in layers.items()}
    if not values.get("name"):
        values["name"] = socket.gethostname() or "connector"
    settings = ConnectorSettings(**values)
    _check(settings, {key: source for key, (_, source) in layers.items()})
    return settings


def _read_yaml(path: Path) -> dict[str, object]:
    import yaml  # only with --config: the daemon does not keep the YAML parser in memory

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    for key in data:
        if key not in _FIELDS:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        if key in _FILE_FORBIDDEN:
            raise ConfigError(
                f"config file {path}: {key} must come from the environment "
                f"({ENV_PREFIX}{key.upper()}), not from a file others may read"
            )
    return {str(k): v for k, v in data.items()}


def _convert(key: str, value: object, source: str) -> object:
    try:
        return msgspec.convert(value, _FIELDS[key], strict=False)
    except msgspec.ValidationError as exc:
        why = str(exc).split(" - at ")[0]
        raise ConfigError(f"invalid {key} = {_show(key, value)} (from {source}): {why}") from None


def _show(key: str, value: object) -> str:
    return "<hidden>" if key in _SECRETS else repr(value)


def _check(s: ConnectorSettings, sources: Mapping[str, str]) -> None:
    """Range and shape checks msgspec types alone cannot express."""
    for key, ok, why in _rules(s):
        if not ok:
            where = f" (from {sources[key]})" if key in sources else ""
            value = _show(key, getattr(s, key))
            raise ConfigError(f"invalid {key} = {value}{where}: {why}")


#: The user ids the broker sends in ``open.principal``: ``local:<name>`` (made with the CLI),
#: ``gitlab:<numeric id>`` (portal users), ``env:<hash prefix>`` (service keys).
_USER_ID_RE = re.compile(
    r"local:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}|gitlab:[1-9][0-9]{0,18}|env:[0-9a-f]{8}"
)


def _allowed_users_rule(s: ConnectorSettings) -> tuple[str, bool, str]:
    """Every entry names exactly one account: a bare ``alice`` would match any account the
    broker calls alice, a GitLab one included, so it is refused rather than guessed at."""
    for entry in s.allowed_users:
        if _USER_ID_RE.fullmatch(entry) is None:
            return (
                "allowed_users",
                False,
                f"entry {entry!r} is not a qualified user id; write local:NAME for a user made "
                f"with 'remotellm-broker users add' or gitlab:ID for a portal user "
                f"(e.g. local:alice, gitlab:123; the id is on the broker's 'users list')",
            )
    return ("allowed_users", True, "")


def _rules(s: ConnectorSettings) -> list[tuple[str, bool, str]]:
    rules = [
        _allowed_users_rule(s),
        ("health_port", 0 <= s.health_port <= 65535, "must be a TCP port, 0-65535"),
        (
            "max_streams",
            s.max_streams is None or 1 <= s.max_streams <= 10_000,
            "must be between 1 and 10000",
        ),
        ("shutdown_grace_s", s.shutdown_grace_s >= 0, "must be 0 or more"),
        (
            "name",
            0 < len(s.name) <= 64 and s.name.isprintable() and not any(c.isspace() for c in s.name),
            "must be 1-64 printable characters without spaces",
        ),
    ]
    for key in (
        "max_retries",
        "user_rate_limit_rpm",
        "user_rate_limit_burst",
        "user_max_streams",
        "usage_retention_days",
    ):
        rules.append((key, getattr(s, key) >= 0, "must be 0 or more"))
    for key in (
        "models_refresh_s",
        "llm_probe_interval_s",
        "llm_connect_timeout_s",
        "llm_read_timeout_s",
        "ping_interval_s",
        "ping_timeout_s",
    ):
        rules.append((key, getattr(s, key) > 0, "must be more than 0"))
    for key, normalize in (("broker_url", normalize_broker_url), ("llm_url", normalize_llm_url)):
        value = getattr(s, key)
        if value is not None:
            try:
                normalize(value)
            except ValueError as exc:
                rules.append((key, False, str(exc)))
    return rules


def data_dir(settings: ConnectorSettings, env: Mapping[str, str]) -> Path:
    """Where the connector keeps its usage records."""
    if settings.data_dir:
        return Path(settings.data_dir).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "remotellm-connector"


def normalize_broker_url(url: str) -> str:
    """The relay URL for what an owner typed: ``https://host`` → ``wss://host/v1/relay``."""
    parts = urlsplit(url.strip())
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError("must start with wss://, ws://, https:// or http://")
    if not parts.hostname:
        raise ValueError("has no host name")
    path = parts.path if parts.path not in ("", "/") else RELAY_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def normalize_llm_url(url: str) -> str:
    """The LLM server's base URL without a trailing ``/`` or ``/v1`` (both are common pastes)."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("has no host name")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))


def read_token(settings: ConnectorSettings) -> str:
    """The relay token: ``REMOTELLM_CONNECTOR_TOKEN`` wins over ``token_file``."""
    if settings.token:
        return settings.token.strip()
    if settings.token_file:
        path = Path(settings.token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"invalid token_file = {settings.token_file!r}: cannot read it ({exc.strerror})"
            ) from None
        if not token:
            raise ConfigError(f"invalid token_file = {settings.token_file!r}: the file is empty")
        return token
    raise ConfigError(
        f"no connector token: set {ENV_PREFIX}TOKEN or pass --token-file "
        "(ask your broker's operator for a token)"
    )
