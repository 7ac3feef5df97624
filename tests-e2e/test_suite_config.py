"""The test suites' own settings (issue 13): every suite has a per-test timeout, and the quick
loop (``hatch run test:fast``) leaves out the Node clients, whose set-up runs ``npm ci``."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "connector", "broker")


def _ini(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    return dict(parser["pytest"])


def test_every_suite_has_a_per_test_timeout_and_the_plugin_that_enforces_it() -> None:
    timeouts = {}
    for name in PACKAGES:
        project = tomllib.loads((ROOT / f"packages/remotellm-{name}/pyproject.toml").read_text())
        timeouts[name] = int(project["tool"]["pytest"]["ini_options"]["timeout"])
        # --strict-config refuses the `timeout` key when pytest-timeout is not installed
        test_extra = project["project"]["optional-dependencies"]["test"]
        assert any(dep.startswith("pytest-timeout") for dep in test_extra), name
    for name, ini in (("e2e", "tests-e2e/pytest.ini"), ("bench", "bench/pytest.ini")):
        timeouts[name] = int(_ini(ROOT / ini)["timeout"])
    assert all(10 <= seconds <= 300 for seconds in timeouts.values()), timeouts


def _collected(*marker_args: str) -> set[str]:
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-c", "tests-e2e/pytest.ini", "--rootdir=tests-e2e",
            "--collect-only", "-q", *marker_args, "tests-e2e",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 5), done.stdout[-2000:] + done.stderr[-2000:]
    return {line for line in done.stdout.splitlines() if "::" in line}


@pytest.mark.slow  # two collections of this suite in subprocesses
def test_the_quick_loop_leaves_out_the_node_tests() -> None:
    script = (ROOT / "scripts/test-all.sh").read_text()
    found = re.search(r'^FAST_MARKERS="([^"]+)"$', script, re.MULTILINE)
    assert found is not None
    node = _collected("-m", "node")
    fast = _collected("-m", found.group(1))
    assert any("test_node_client.py" in test for test in node)
    assert fast  # the quick loop still runs the rest
    assert not node & fast
