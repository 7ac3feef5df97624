"""Log format: JSON lines off a terminal, readable lines on one, levels honoured."""

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from remotellm_connector.logs import configure_logging


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("auto", "info", stream=out)
    structlog.get_logger("t").info("request", correlation_id="c1", status=200)
    line = json.loads(out.getvalue())
    assert line["event"] == "request"
    assert line["correlation_id"] == "c1"
    assert line["level"] == "info"
    assert "timestamp" in line


def test_console_lines_on_a_terminal() -> None:
    out = Terminal()
    configure_logging("auto", "info", stream=out)
    structlog.get_logger("t").info("relay_up", url="wss://b")
    assert "relay_up" in out.getvalue()
    assert not out.getvalue().startswith("{")


def test_level_filters_and_exceptions_are_rendered_in_json() -> None:
    out = io.StringIO()
    configure_logging("json", "warning", stream=out)
    log = structlog.get_logger("t")
    log.info("quiet")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("loud")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["event"] for x in lines] == ["loud"]
    assert "RuntimeError: boom" in lines[0]["exception"]
