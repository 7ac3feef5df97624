"""The systemd unit in docs/deploy is valid and agrees with the CLI it starts."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from remotellm_connector.cli import EXIT_CONFIG, main

UNIT = Path(__file__).resolve().parents[3] / "docs" / "deploy" / "remotellm-connector.service"


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: sections, repeatable keys, comments, backslash continuations."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if match := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(match.group(1), {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        assert current is not None, f"key outside a section: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_has_the_sections_and_keys_a_service_needs() -> None:
    unit = parse(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["Restart"] == ["on-failure"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert int(service["TimeoutStopSec"][0]) > 30  # longer than the default drain grace
    assert service["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit["Unit"]["After"][0]


def test_exec_start_uses_real_flags_and_keeps_the_token_out_of_argv() -> None:
    argv = shlex.split(parse(UNIT.read_text())["Service"]["ExecStart"][0])
    assert argv[1] == "run"
    assert "--token-file" in argv
    assert not any("rct-" in arg for arg in argv)
    help_text = CliRunner().invoke(main, ["run", "--help"]).output
    for flag in (arg for arg in argv if arg.startswith("--")):
        assert flag in help_text, flag


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify wants the program to exist: use this interpreter with ``-m remotellm_connector``.
    command = f"{sys.executable} -m remotellm_connector"
    text = UNIT.read_text().replace("/usr/local/bin/remotellm-connector", command)
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings
