"""A broker without GitLab login must not load the portal's stack (issue 7, idle RSS).

Each case starts the real broker (``serve.run_broker``: public app, health app, sockets on
127.0.0.1 port 0) in a fresh interpreter, fetches ``/`` once, shuts down and prints which of
the portal's heavy packages ended up in ``sys.modules``. A fresh process is the only honest
check: this test process has long imported them for the other portal tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("authlib", "cryptography", "jinja2", "aiohttp_session")

_SCRIPT = r"""
import asyncio, json, os, sys
from pathlib import Path

import aiohttp

from remotellm_broker import cli  # noqa: F401  (what `remotellm-broker serve` imports)
from remotellm_broker.config import load_settings
from remotellm_broker.serve import run_broker
from remotellm_broker.users import UserStore

async def main() -> None:
    overrides = json.loads(sys.argv[1])
    settings = load_settings(None, os.environ, overrides)
    store = UserStore(Path(settings.users_file))
    stop = asyncio.Event()
    seen: list[object] = []

    async def visit(url: str) -> None:
        async with aiohttp.ClientSession() as http, http.get(url + "/") as response:
            seen.append([response.status, await response.text()])
        stop.set()

    tasks = []

    def started(bound):
        tasks.append(asyncio.ensure_future(visit(bound.url)))

    await run_broker(settings, store, stop=stop, started=started)
    await asyncio.gather(*tasks)
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
    print(json.dumps({"page": seen[0], "heavy": heavy}))

asyncio.run(main())
"""


def _start_broker(tmp_path: Path, **settings: str) -> dict[str, object]:
    """Settings go in as REMOTELLM_BROKER_* variables, as an operator sets them (secrets are
    refused as flags)."""
    overrides = {"port": 0, "health_port": 0, "users_file": str(tmp_path / "users.yaml")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTELLM_BROKER_")}
    env["REMOTELLM_BROKER_LOG_LEVEL"] = "warning"
    env.update({f"REMOTELLM_BROKER_{name.upper()}": value for name, value in settings.items()})
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(overrides), ",".join(HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_broker_without_gitlab_login_does_not_import_the_portal_stack(tmp_path: Path) -> None:
    result = _start_broker(tmp_path)
    assert result["heavy"] == []
    status, text = result["page"]  # type: ignore[misc]
    assert status == 200
    assert "Self-service keys are not set up here" in text


def test_a_broker_with_gitlab_login_imports_it(tmp_path: Path) -> None:
    result = _start_broker(
        tmp_path,
        public_url="http://127.0.0.1:1",
        gitlab_client_id="client-id",
        gitlab_client_secret="client-secret",
        session_secret="a-session-secret-of-enough-length-0123456789",
        portal_allowed_groups="acme",
    )
    assert result["heavy"] == sorted(HEAVY)
    status, text = result["page"]  # type: ignore[misc]
    assert status == 200
    assert "not set up here" not in text
