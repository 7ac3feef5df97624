"""Capturing the broker's JSON log lines in a test, and putting logging back afterwards.

``configure_logging`` replaces the root handlers and structlog's configuration for the whole
process; ``restored_logging`` undoes that, so one test's capture never leaks into the next.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

__all__ = ["records", "restored_logging"]


@contextmanager
def restored_logging() -> Iterator[None]:
    """Run the body, then restore the root handlers and level and structlog's configuration."""
    saved_config = structlog.get_config()
    was_configured = structlog.is_configured()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        if was_configured:
            structlog.configure(**saved_config)
        else:
            structlog.reset_defaults()


def records(buf: io.StringIO, event: str) -> list[dict[str, object]]:
    """The captured lines whose event is ``event``."""
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    return [r for r in lines if r.get("event") == event]
