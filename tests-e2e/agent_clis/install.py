"""Install the pinned coding-agent CLIs once, into ~/.cache/remotellm/npm/agent-clis-<hash>.

The clients suite (``-m clients``) drives Claude Code, the Codex CLI and the Cline CLI as a
developer would. Their npm packages are large (hundreds of MB of platform binaries), so, like
the llama.cpp build, they are installed once per pinned lock file and reused: the directory is
named after a hash of ``package-lock.json``, so a version bump installs afresh and an unchanged
pin never touches the registry again. ``npm install`` follows the lock file (``npm ci`` refuses
it: npm leaves other platforms' optional binaries of cline out of the lock it writes).

    python tests-e2e/agent_clis/install.py     # prints the bin directory

scripts/test-all.sh runs this before the tests (outside every test timeout); the suite's
conftest also calls ``ensure_agent_clis`` when clients tests are collected.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["CLI_DIR", "PINNED", "AgentCliUnavailable", "ensure_agent_clis"]

CLI_DIR = Path(__file__).resolve().parent
CACHE_ROOT = Path(
    os.environ.get("REMOTELLM_NPM_CACHE", Path.home() / ".cache" / "remotellm" / "npm")
)
PINNED: dict[str, str] = json.loads((CLI_DIR / "package.json").read_text(encoding="utf-8"))[
    "dependencies"
]
_BINS = ("claude", "codex", "cline")
_DONE = ".installed"


class AgentCliUnavailable(RuntimeError):
    """npm is missing or the install failed."""


def _install_dir() -> Path:
    lock = (CLI_DIR / "package-lock.json").read_bytes()
    return CACHE_ROOT / f"agent-clis-{hashlib.sha256(lock).hexdigest()[:16]}"


def ensure_agent_clis() -> Path:
    """The ``node_modules/.bin`` directory holding claude, codex and cline (installed if new)."""
    target = _install_dir()
    bin_dir = target / "node_modules" / ".bin"
    if (target / _DONE).is_file() and all((bin_dir / name).exists() for name in _BINS):
        return bin_dir
    if shutil.which("npm") is None:
        raise AgentCliUnavailable("npm is needed to install the agent CLIs")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="agent-clis-", dir=CACHE_ROOT))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(CLI_DIR / name, staging / name)
        env = {**os.environ, "npm_config_update_notifier": "false", "DISABLE_AUTOUPDATER": "1"}
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=staging,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if done.returncode != 0:
            why = done.stderr[-3000:]
            raise AgentCliUnavailable(f"npm install failed ({done.returncode}):\n{why}")
        (staging / _DONE).write_text(json.dumps(PINNED, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bin_dir


if __name__ == "__main__":
    try:
        print(ensure_agent_clis())
    except AgentCliUnavailable as exc:
        sys.exit(str(exc))
