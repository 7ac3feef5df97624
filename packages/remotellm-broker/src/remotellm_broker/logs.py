"""Logging: structlog, JSON lines by default, readable console output on a terminal.

One line per request (``event="request"``) carries the correlation id, user id, model,
connector, status, time to first token, duration and tokens. What is never logged: API keys,
connector tokens, cookies, request or response bodies (prompts and answers).

aiohttp's own loggers are routed through the same renderer. Its HTTP parser logs a full
traceback for every malformed request; a client sending garbage is not a server fault, so
those records are cut down to one warning line (``_BadRequestFilter``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def get_logger(name: str) -> Any:
    """A structlog logger for a broker module (configured or not, it never fails)."""
    return structlog.get_logger(name)


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Send structlog and stdlib logging to ``stream`` (stderr) as JSON or console lines."""
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
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([] if console else [structlog.processors.format_exc_info]),
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
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

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = getattr(exc, "code", None) or getattr(exc, "status", None)
        if exc is not None and isinstance(status, int) and 400 <= status < 500:
            record.msg = "malformed HTTP request refused with %s: %s"
            record.args = (status, getattr(exc, "message", type(exc).__name__))
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
        return True
