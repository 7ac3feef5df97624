"""One logging convention for both services (issue 13): the broker's and the connector's
``logs.py`` are one module kept twice, because the services never import each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROKER = ROOT / "packages/remotellm-broker/src/remotellm_broker"
CONNECTOR = ROOT / "packages/remotellm-connector/src/remotellm_connector"
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def test_the_two_logs_modules_differ_only_in_the_package_name() -> None:
    broker = (BROKER / "logs.py").read_text()
    connector = (CONNECTOR / "logs.py").read_text()
    assert '_PACKAGE = "remotellm_broker"' in broker
    assert broker.replace("remotellm_broker", "remotellm_connector") == connector


def _events(package: Path) -> list[tuple[str, int, str]]:
    """(file, line, event) of every ``log.<level>("event", ...)`` call in ``package``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_METHODS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
            ):
                first = node.args[0] if node.args else None
                event = first.value if isinstance(first, ast.Constant) else ast.dump(first or node)
                found.append((path.name, node.lineno, str(event)))
    return found


def test_every_event_name_is_a_snake_case_constant() -> None:
    events = _events(BROKER) + _events(CONNECTOR)
    assert len(events) > 50  # the walk found the log calls
    bad = [e for e in events if not SNAKE_CASE.fullmatch(e[2])]
    assert bad == []
