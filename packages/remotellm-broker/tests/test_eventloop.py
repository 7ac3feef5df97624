"""``event_loop``: the real ``remotellm-broker serve`` runs on the loop the setting picks.

uvloop is installed in the test env (the ``[uvloop]`` extra); "absent" is a real failed
import: a ``uvloop`` package on ``PYTHONPATH`` whose import raises ``ImportError``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from remotellm_broker.config import load_settings
from remotellm_broker.eventloop import EventLoopError, pick_loop

BIN = Path(sys.executable).parent / "remotellm-broker"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTELLM_")}
    return {**env, "REMOTELLM_BROKER_LOG_FORMAT": "json", **extra}


def _without_uvloop(tmp_path: Path) -> dict[str, str]:
    shadow = tmp_path / "no-uvloop" / "uvloop"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('uvloop hidden by the test')\n")
    return {"PYTHONPATH": str(shadow.parent)}


def _serve_once(tmp_path: Path, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Serve until the API answers, stop with SIGTERM; the ``event_loop_selected`` line."""
    proc = subprocess.Popen(
        [str(BIN), "serve", "--port", "0", "--health-port", "0", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving the OpenAI API at" in line, line + proc.communicate(timeout=10)[1]
        url = line.rsplit(" ", 1)[1].strip()
        with urllib.request.urlopen(f"{url.removesuffix('/v1')}/openapi.json", timeout=5) as r:
            assert r.status == 200  # the service really runs on that loop
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 0, stderr[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(x) for x in stderr.splitlines() if x.startswith("{")]
    selected = [e for e in events if e["event"] == "event_loop_selected"]
    assert len(selected) == 1, "logged once at start-up"
    return selected[0]


def test_the_default_runs_on_uvloop_when_it_is_installed(tmp_path: Path) -> None:
    event = _serve_once(tmp_path, [], _env())
    assert (event["event_loop"], event["setting"]) == ("uvloop", "auto")


@pytest.mark.parametrize(
    ("args", "extra"),
    [(["--event-loop", "asyncio"], {}), ([], {"REMOTELLM_BROKER_EVENT_LOOP": "asyncio"})],
    ids=["flag", "env"],
)
def test_asyncio_opts_out_of_uvloop(tmp_path: Path, args: list[str], extra: dict[str, str]) -> None:
    event = _serve_once(tmp_path, args, _env(**extra))
    assert (event["event_loop"], event["setting"]) == ("asyncio", "asyncio")


def test_auto_without_uvloop_falls_back_to_asyncio_and_says_how_to_install_it(
    tmp_path: Path,
) -> None:
    event = _serve_once(tmp_path, [], _env(**_without_uvloop(tmp_path)))
    assert (event["event_loop"], event["setting"]) == ("asyncio", "auto")
    assert "pip install 'remotellm-broker[uvloop]'" in event["why"]


def test_uvloop_asked_for_but_absent_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN), "serve", "--port", "0", "--health-port", "0", "--event-loop", "uvloop"],
        cwd=tmp_path, env=_env(**_without_uvloop(tmp_path)),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "event_loop = uvloop but uvloop cannot be imported" in done.stderr
    assert "Traceback" not in done.stderr
    assert "serving" not in done.stdout


def test_yaml_and_bad_values(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("event_loop: asyncio\n")
    assert load_settings(config, {}, {}).event_loop == "asyncio"
    assert load_settings(None, {"REMOTELLM_BROKER_EVENT_LOOP": "UVLOOP"}, {}).event_loop == "uvloop"
    with pytest.raises(Exception, match="event_loop"):
        load_settings(None, {"REMOTELLM_BROKER_EVENT_LOOP": "trio"}, {})


def test_pick_loop_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert pick_loop("auto")[0] is None
    with pytest.raises(EventLoopError, match=r"remotellm-broker\[uvloop\]"):
        pick_loop("uvloop")
