"""``event_loop``: the real ``remotellm-connector run`` runs on the loop the setting picks.

uvloop is installed in the test env (the ``[uvloop]`` extra); "absent" is a real failed
import: a ``uvloop`` package on ``PYTHONPATH`` whose import raises ``ImportError``. The
connector runs its whole start-up (discovery, health port, two dials to a closed port) and
exits by itself through ``--max-retries 1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from remotellm_connector.config import ConfigError, load_settings
from remotellm_connector.eventloop import EventLoopError, pick_loop

BIN = Path(sys.executable).parent / "remotellm-connector"
CLOSED = "127.0.0.1:1"  # nothing listens on port 1: every dial is refused at once


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTELLM_")}
    return {
        **env,
        "REMOTELLM_CONNECTOR_TOKEN": "rct-test",
        "REMOTELLM_CONNECTOR_LOG_FORMAT": "json",
        **extra,
    }


def _without_uvloop(tmp_path: Path) -> dict[str, str]:
    shadow = tmp_path / "no-uvloop" / "uvloop"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('uvloop hidden by the test')\n")
    return {"PYTHONPATH": str(shadow.parent)}


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "run", "--broker-url", f"ws://{CLOSED}/v1/relay",
         "--llm-url", f"http://{CLOSED}", "--health-port", "0", "--max-retries", "1", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _selected_after_a_full_run(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    events = _events(done.stderr)
    names = [e["event"] for e in events]
    assert done.returncode == 1, done.stderr[-2000:]  # gave up after --max-retries: ran fully
    assert names[0] == "event_loop_selected", names
    assert names.count("event_loop_selected") == 1, "logged once at start-up"
    assert {"connector_started", "relay_connect_failed", "giving_up"} <= set(names)
    return events[0]


def test_the_default_runs_on_uvloop_when_it_is_installed() -> None:
    event = _selected_after_a_full_run(_run(env=_env()))
    assert (event["event_loop"], event["setting"]) == ("uvloop", "auto")


@pytest.mark.parametrize(
    ("args", "extra"),
    [(["--event-loop", "asyncio"], {}), ([], {"REMOTELLM_CONNECTOR_EVENT_LOOP": "asyncio"})],
    ids=["flag", "env"],
)
def test_asyncio_opts_out_of_uvloop(args: list[str], extra: dict[str, str]) -> None:
    event = _selected_after_a_full_run(_run(*args, env=_env(**extra)))
    assert (event["event_loop"], event["setting"]) == ("asyncio", "asyncio")


def test_uvloop_flag_picks_uvloop() -> None:
    event = _selected_after_a_full_run(_run("--event-loop", "uvloop", env=_env()))
    assert (event["event_loop"], event["setting"]) == ("uvloop", "uvloop")


def test_auto_without_uvloop_falls_back_to_asyncio_and_says_how_to_install_it(
    tmp_path: Path,
) -> None:
    event = _selected_after_a_full_run(_run(env=_env(**_without_uvloop(tmp_path))))
    assert (event["event_loop"], event["setting"]) == ("asyncio", "auto")
    assert "pip install 'remotellm-connector[uvloop]'" in event["why"]


def test_uvloop_asked_for_but_absent_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    done = _run("--event-loop", "uvloop", env=_env(**_without_uvloop(tmp_path)))
    assert done.returncode == 2
    assert "event_loop = uvloop but uvloop cannot be imported" in done.stderr
    assert "Traceback" not in done.stderr
    assert "connector_started" not in done.stderr


def test_yaml_and_bad_values(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text("event_loop: asyncio\n")
    assert load_settings(config, {}, {}).event_loop == "asyncio"
    with pytest.raises(ConfigError, match="event_loop"):
        load_settings(None, {"REMOTELLM_CONNECTOR_EVENT_LOOP": "trio"}, {})


def test_pick_loop_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert pick_loop("auto")[0] is None
    with pytest.raises(EventLoopError, match=r"remotellm-connector\[uvloop\]"):
        pick_loop("uvloop")
