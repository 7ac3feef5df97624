"""Running the coding-agent CLIs (Claude Code, Codex, Cline) as a developer would, but sealed.

Each run gets a fresh HOME (and CODEX_HOME), a minimal environment, and every knob the CLIs
have against non-essential traffic: telemetry, error reporting, auto-update, feedback. On top,
HTTP(S)_PROXY points at a ``ProxyTrap`` on 127.0.0.1 and NO_PROXY lets only loopback through,
so any request to elsewhere lands in the trap (and fails) instead of leaving the machine; tests
assert the trap saw nothing. Each CLI runs in its own session and the whole process group is
killed afterwards, so nothing it spawned outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent_clis.install import ensure_agent_clis

__all__ = ["AgentRun", "ProxyTrap", "agent_bin", "proxy_trap", "run_agent", "sealed_env"]

_QUIET = {
    # every CLI / library that honours these
    "DO_NOT_TRACK": "1",
    "DISABLE_TELEMETRY": "1",
    "OTEL_SDK_DISABLED": "true",
    "NO_UPDATE_NOTIFIER": "1",
    "npm_config_update_notifier": "false",
    # Claude Code
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_MAX_RETRIES": "0",
    # Cline: no update check, no background hub daemon outliving the run
    "CLINE_NO_AUTO_UPDATE": "1",
    "CLINE_SESSION_BACKEND_MODE": "local",
    # Codex reads its switches from CODEX_HOME/config.toml (see test_clients_agents)
    "NO_COLOR": "1",
}


def agent_bin() -> Path:
    """Where the pinned CLIs are (installed on first use; see agent_clis/install.py)."""
    return ensure_agent_clis()


@dataclass
class ProxyTrap:
    """A proxy on 127.0.0.1 that forwards nothing and remembers who tried to get out."""

    port: int = 0
    attempts: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                line = await reader.readline()
            self.attempts.append(line.decode(errors="replace").strip())
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def proxy_trap() -> AsyncIterator[ProxyTrap]:
    trap = ProxyTrap()
    server = await asyncio.start_server(trap._refuse, "127.0.0.1", 0)
    trap.port = server.sockets[0].getsockname()[1]
    try:
        yield trap
    finally:
        server.close()
        await server.wait_closed()


def sealed_env(home: Path, trap: ProxyTrap, extra: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment: the CLIs' bin dir first, a private HOME, all quiet knobs."""
    path = f"{agent_bin()}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {
        "PATH": path,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "HTTP_PROXY": trap.url,
        "HTTPS_PROXY": trap.url,
        "ALL_PROXY": trap.url,
        "http_proxy": trap.url,
        "https_proxy": trap.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **_QUIET,
        **extra,
    }


@dataclass(frozen=True)
class AgentRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def run_agent(
    argv: list[str], *, env: dict[str, str], cwd: Path, within: float = 90.0
) -> AgentRun:
    """Run one CLI to its end (stdin closed), then kill whatever it left in its session."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()
    return AgentRun(
        int(proc.returncode or 0), out.decode(errors="replace"), err.decode(errors="replace")
    )
