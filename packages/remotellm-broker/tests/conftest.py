"""Fixtures shared by the broker's test modules."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from logcapture import restored_logging
from remotellm_broker.logs import configure_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The broker's log lines, as JSON, for the duration of the test."""
    with restored_logging():
        buf = io.StringIO()
        configure_logging("json", "info", stream=buf)
        yield buf
