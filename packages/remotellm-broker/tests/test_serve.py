"""``remotellm-broker serve`` as an operator runs it: a real process, real signals."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotellm_broker.users import UserStore

BIN = Path(sys.executable).parent / "remotellm-broker"
TOKEN_LINE = re.compile(
    r"REMOTELLM_CONNECTOR_TOKEN=(rct-[0-9a-f]{48}) remotellm-connector run "
    r"--broker-url ws://127\.0\.0\.1:(\d+)/v1/relay"
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("REMOTELLM_")}


@contextlib.contextmanager
def _serving(tmp_path: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``remotellm-broker serve`` in ``tmp_path``; killed if the test did not stop it."""
    with subprocess.Popen(
        [str(BIN), "serve", "--port", "0", "--health-port", "0", *args],
        cwd=tmp_path,
        env={**_env(), "REMOTELLM_BROKER_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _read_until(
    proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float = 20
) -> tuple[re.Match[str], list[str]]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = pattern.search(line)
        if found:
            return found, lines
    raise AssertionError(f"pattern not printed; got {lines!r}")


def test_serve_with_nothing_configured_explains_keys_and_connectors_then_drains_on_sigterm(
    tmp_path: Path,
) -> None:
    with _serving(tmp_path) as proc:
        found, lines = _read_until(proc, TOKEN_LINE)
        text = "".join(lines)
        assert "serving the OpenAI API at http://127.0.0.1:" in text
        assert "remotellm-broker users add" in text
        port = int(found.group(2))
        # the generated token is stored (hashed) in ./users.yaml and accepted by the relay
        store = UserStore(tmp_path / "users.yaml")
        assert store.check_connector_token(found.group(1)) == "connector"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        stderr = proc.stderr.read()
    assert "broker_stopped" in stderr
    assert found.group(1) not in stderr  # the token is printed once, never logged


def test_serve_does_not_create_a_token_when_one_exists(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.yaml")
    store.create_connector_token("home-gpu")
    store.add_user("alice")
    with _serving(tmp_path) as proc:
        _, lines = _read_until(proc, re.compile("serving the OpenAI API"))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None
        rest = proc.stdout.read()
    assert "REMOTELLM_CONNECTOR_TOKEN" not in "".join(lines) + rest
    assert [t.name for t in UserStore(tmp_path / "users.yaml").list_connector_tokens()] == [
        "home-gpu"
    ]


@pytest.mark.parametrize(
    ("args", "env", "field"),
    [
        (["--port", "70000"], {}, "port"),
        (["--rate-limit-rpm", "-1"], {}, "rate_limit_rpm"),
        ([], {"REMOTELLM_BROKER_QUEUE_TIMEOUT_S": "soon"}, "queue_timeout_s"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_field(
    args: list[str], env: dict[str, str], field: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(BIN), "serve", *args],
        cwd=tmp_path,
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode != 0
    assert field in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("flag", "health"), [("--port", False), ("--health-port", True)])
def test_a_port_in_use_stops_start_up_with_one_line_naming_it(
    flag: str, health: bool, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = ["--port", "0", "--health-port", str(port)] if health else ["--port", str(port)]
        done = subprocess.run(
            [str(BIN), "serve", *ports],
            cwd=tmp_path,
            env={**_env(), "REMOTELLM_BROKER_LOG_LEVEL": "warning"},
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert f"127.0.0.1:{port}" in line
    assert flag in line
