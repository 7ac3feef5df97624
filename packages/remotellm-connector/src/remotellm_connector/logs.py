"""structlog set-up: JSON lines when not on a terminal, readable lines when on one.

One line per request (``request`` event, written by the dispatcher) with the correlation id,
model, user id, status, time to first byte, duration and tokens; never a key, never prompt or
completion text. Logs go to stderr so ``check``'s report on stdout stays clean.
"""

import logging
import sys
from typing import Literal, TextIO

import structlog

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the process (call once, at start-up)."""
    out = stream if stream is not None else sys.stderr
    json = fmt == "json" or (fmt == "auto" and not out.isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.ERROR)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
