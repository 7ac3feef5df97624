"""Logging for remotellm services: one set-up, one event style, no secret in any line.

The broker and the connector each keep a copy of this module; the two differ only in the
package name (``tests-e2e/test_logging_convention.py`` fails when they drift). They cannot
share one: the services never import each other, and the protocol package stays msgspec-only.

The convention, for every log call in either service:

- ``log = get_logger(__name__)``; the first argument of a call is the event: a constant
  snake_case name (``connector_connected``, ``request``), never a sentence or a dotted name.
  Variable parts are keyword fields: ``log.info("relay_down", reason=..., retry_in_s=...)``.
- Each line gets ``component``: the module under the package that logged it (``relay``,
  ``portal``, ``dispatch``), or the library logger's name (``aiohttp.server``,
  ``websockets.client``). Plus ``level`` and ``timestamp`` (ISO 8601, UTC).
- One JSON object per line on stderr when stderr is not a terminal (``log_format=json``);
  readable console lines on a terminal (``log_format=console``).
- The standard library's loggers (aiohttp, websockets, asyncio) go through the same renderer.
  aiohttp's traceback for a malformed HTTP request is cut to one ``malformed_http_request``
  warning: a client sending garbage is not a server fault.

Secrets are redacted at the boundary, whatever a call passes: a structlog processor rewrites
each line's fields (any field named like ``authorization``, ``api_key``, ``cookie``,
``token``, ``password`` or ``secret`` loses its value), and the handler rewrites the rendered
line, library lines and tracebacks included: ``Authorization``, ``Proxy-Authorization``,
``api-key``, ``x-api-key``, ``Cookie`` and ``Set-Cookie`` header values, ``Bearer``
credentials, ``sk-``/``rct-`` keys and tokens, and the secrets this process was configured
with (``configure_logging(secrets=...)``) become ``[redacted]``. Never logged on purpose
either: request or response bodies (prompts and answers).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact_text"]

_PACKAGE = "remotellm_broker"
REDACTED = "[redacted]"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Field names whose value is a secret whatever it looks like (lowercase, '-' read as '_').
_SECRET_FIELDS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "api_key",
        "x_api_key",
        "apikey",
        "key",
        "cookie",
        "set_cookie",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "password",
        "secret",
        "client_secret",
        "session_secret",
        "llm_api_key",
    }
)
# `Authorization: Bearer x`, `'Cookie': 'a=b'`, `"x-api-key": "x"`: the value runs to the end
# of the line, a quote, or a backslash (a repr'd or JSON-escaped \r or \n).
_HEADER = re.compile(
    r"""(?i)\b(proxy-authorization|authorization|x-api-key|api[-_]key|set-cookie|cookie)"""
    r"""(\\?["']?[ \t]*:[ \t]*\\?["']?)[^\r\n"'\\]+"""
)
# `?api-key=x&...`, `token=x`: a query string or a key=value text, to the next separator.
_PARAM = re.compile(
    r"""(?i)\b(x-api-key|api[-_]?key|(?:access_|refresh_|id_)?token|password|client_secret)"""
    r"""(=)[^\s&"'\\,;]+"""
)
# "Basic" only capitalised, and 8+ characters: "a basic check" is prose, not a credential.
_CREDENTIAL = re.compile(r"\b((?i:bearer)|Basic)([ \t]+)[A-Za-z0-9._~+/=-]{8,}")
# OpenAI-style keys (sk-..., sk-proj-...) and remotellm connector tokens (rct-...).
_SHAPED = re.compile(r"\b(?:sk|rct)-[A-Za-z0-9_-]{8,}")

# Cheap first look (a lowercase copy and a few substring tests, far cheaper than the patterns
# above): a line with none of these shows no secret to the patterns, so they are skipped.
_HINTS = (
    "sk-",
    "rct-",
    "bearer",
    "basic",
    "authoriz",
    "cookie",
    "api-key",
    "api_key",
    "apikey",
    "token=",
    "password=",
    "secret=",
)

_known: tuple[str, ...] = ()


def redact_text(text: str) -> str:
    """``text`` with every secret it shows replaced by ``[redacted]``."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    for hint in _HINTS:
        if hint in lowered:
            break
    else:
        return text
    text = _HEADER.sub(rf"\1\2{REDACTED}", text)
    text = _PARAM.sub(rf"\1\2{REDACTED}", text)
    text = _CREDENTIAL.sub(rf"\1\2{REDACTED}", text)
    return _SHAPED.sub(REDACTED, text)


def _redact_value(name: str, value: Any) -> Any:
    if value is None or value == "":
        return value
    if name in _SECRET_FIELDS or name.lower().replace("-", "_") in _SECRET_FIELDS:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value("", v) for v in value]
    return value


_PLAIN = (int, float, bool)


def redact_secrets(logger: Any, method: str, event_dict: Any) -> Any:
    """structlog processor: no field of the line shows a secret (see the module docstring)."""
    for name, value in event_dict.items():
        if name in _SECRET_FIELDS or (type(value) not in _PLAIN and not name.startswith("_")):
            event_dict[name] = _redact_value(name, value)
    return event_dict


def add_component(logger: Any, method: str, event_dict: Any) -> Any:
    """structlog processor: ``component`` from the logger's name (module or library)."""
    if "component" not in event_dict:
        record = event_dict.get("_record")
        name = record.name if record is not None else getattr(logger, "name", None) or ""
        if name == _PACKAGE or name.startswith(_PACKAGE + "."):
            event_dict["component"] = name.split(".")[1] if "." in name else name
        else:
            event_dict["component"] = name
    return event_dict


def get_logger(name: str) -> Any:
    """A structlog logger for a module (``get_logger(__name__)``); never fails."""
    return structlog.get_logger(name)


class _RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """The last word before a line is written: whatever a processor missed (a traceback
    rendered on a terminal, a library's own message), the rendered text is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_logging(
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    secrets: Iterable[str | None] = (),
) -> None:
    """Send structlog and stdlib logging to ``stream`` (stderr) as JSON or console lines.

    ``secrets``: values this process holds (tokens, keys, client secrets) that must never be
    shown even if they do not look like one; values shorter than 8 characters are ignored.
    """
    global _known
    # longest first, so a secret that contains another is replaced whole
    _known = tuple(sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True))

    out = stream if stream is not None else sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_component,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = _LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        _RedactingFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([] if console else [structlog.processors.format_exc_info]),
                redact_secrets,
                renderer,
            ],
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.ExtraAdder(allow=_BadRequestFilter.FIELDS),
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    server_logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestFilter) for f in server_logger.filters):
        server_logger.addFilter(_BadRequestFilter())
    # Our own per-request line replaces aiohttp's access log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _BadRequestFilter(logging.Filter):
    """Turn aiohttp's traceback for a malformed HTTP request into one warning line."""

    FIELDS = ("status", "error", "remote")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = getattr(exc, "code", None) or getattr(exc, "status", None)
        if exc is not None and isinstance(status, int) and 400 <= status < 500:
            message = str(getattr(exc, "message", "") or type(exc).__name__)
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg = "malformed_http_request"
            record.args = ()
            record.status = status
            record.error = _parser_reason(message)
            if remote is not None:  # recent aiohttp names the client; 3.11.0 does not
                record.remote = str(remote)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
        return True


def _parser_reason(message: str) -> str:
    """What aiohttp's parser objected to, without the bytes it quotes after it: those are
    the client's header lines (its API key) or body (its prompt)."""
    reason: list[str] = []
    for line in message.splitlines():
        text = line.strip()
        if text.startswith(("b'", 'b"', "^")):
            break
        quoted = min((i for i in (text.find(" b'"), text.find(' b"')) if i >= 0), default=-1)
        if quoted >= 0:
            reason.append(text[:quoted])
            break
        if text:
            reason.append(text)
    return redact_text(" ".join(reason).strip().rstrip(":").strip())
