"""The Node client: ``npm ci`` once per session, then ``cline_client.mjs`` per request.

``node_modules`` stays out of git (package.json and package-lock.json are committed); ``npm ci``
installs exactly the locked ``openai`` package and is skipped when the installed tree already
matches the lock file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.modes import E2E_ROOT

__all__ = ["NODE_DIR", "NodeUnavailable", "ensure_node_client", "run_cline", "run_node_script"]

NODE_DIR = E2E_ROOT / "node"
SCRIPT = NODE_DIR / "cline_client.mjs"
RESPONSES_SCRIPT = NODE_DIR / "responses_client.mjs"


class NodeUnavailable(RuntimeError):
    """node or npm is missing, or npm ci failed."""


def _installed_matches_lock() -> bool:
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    if not installed.is_file():
        return False
    lock = json.loads((NODE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    have = json.loads(installed.read_text(encoding="utf-8"))
    wanted = {k: v.get("version") for k, v in lock.get("packages", {}).items() if k}
    got = {k: v.get("version") for k, v in have.get("packages", {}).items() if k}
    return wanted == got


def ensure_node_client() -> None:
    """``npm ci`` into tests-e2e/node/node_modules unless it is already there."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise NodeUnavailable("node and npm are needed for the Node client tests")
    if _installed_matches_lock():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise NodeUnavailable(f"npm ci failed ({done.returncode}):\n{done.stderr[-2000:]}")


async def run_cline(options: dict[str, Any], *, within: float = 60.0) -> dict[str, Any]:
    """Run the Cline-shaped request; its JSON report (see cline_client.mjs)."""
    return await run_node_script(SCRIPT, options, within=within)


async def run_node_script(
    script: Path, options: dict[str, Any], *, within: float = 60.0
) -> dict[str, Any]:
    """Run one of node/*.mjs with its options; the JSON report it prints last."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0 or not out.strip():
        raise AssertionError(f"node client failed ({proc.returncode}): {err.decode()[-2000:]}")
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report
