"""Broker and connector as real processes, started with their console scripts.

This is how operators and LLM owners run them: ``remotellm-broker serve``,
``remotellm-connector run``, the ``users``/``tokens`` admin commands, configuration through
flags and ``REMOTELLM_*`` environment variables, SIGTERM to stop. Output goes to files in
the test's temp dir (kept for post-mortems; pipes could fill up and block a chatty child).
Every process is killed at the end of its ``with`` block whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.waits import wait_for

__all__ = ["BIN", "Proc", "admin", "broker_process", "connector_process"]

BIN = Path(sys.executable).parent
_SERVING = re.compile(r"serving the OpenAI API at (http://\S+)/v1")


def admin(*args: str, users_file: Path) -> str:
    """``remotellm-broker <args> --users-file F``: its stdout (a key, a token…)."""
    done = subprocess.run(
        [str(BIN / "remotellm-broker"), *args, "--users-file", str(users_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"remotellm-broker {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


@dataclass
class Proc:
    """A running console script and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    async def wait(self, within: float = 30.0) -> int:
        """The exit code, once the process has exited (at most ``within`` seconds)."""
        await wait_for(lambda: self.process.poll() is not None, within, what=f"{self.name} to exit")
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no drain, sockets reset by the kernel."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _start(name: str, argv: list[str], workdir: Path, env: Mapping[str, str]) -> Proc:
    """fork+exec returns at once; the child's start-up runs in parallel with the test."""
    out, err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env={**os.environ, **env}
        )
    return Proc(name, process, out, err)


@asynccontextmanager
async def _spawn(
    name: str, argv: list[str], workdir: Path, env: Mapping[str, str]
) -> AsyncIterator[Proc]:
    proc = _start(name, argv, workdir, env)
    process = proc.process
    try:
        yield proc
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await proc.wait(15)
            except TimeoutError:
                proc.kill()


@dataclass
class BrokerProcess:
    proc: Proc
    url: str
    users_file: Path

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def relay_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/v1/relay"

    def add_user(self, name: str) -> str:
        return admin("users", "add", name, users_file=self.users_file)

    def connector_token(self, name: str) -> str:
        return admin("tokens", "create", name, users_file=self.users_file)

    def block(self, name: str) -> None:
        admin("users", "block", name, users_file=self.users_file)


@asynccontextmanager
async def broker_process(
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    port: int = 0,
    health_port: int = 0,
    name: str = "broker",
) -> AsyncIterator[BrokerProcess]:
    """``remotellm-broker serve`` (on ephemeral ports unless given); settings through
    REMOTELLM_BROKER_*. Processes started in the same ``workdir`` share its users file."""
    users_file = workdir / "users.yaml"
    argv = [
        str(BIN / "remotellm-broker"),
        "serve",
        "--port",
        str(port),
        "--health-port",
        str(health_port),
        "--users-file",
        str(users_file),
    ]
    settings = {"REMOTELLM_BROKER_LOG_FORMAT": "json", **(env or {})}
    async with _spawn(name, argv, workdir, settings) as proc:
        found: list[str] = []

        def serving() -> bool:
            if proc.process.poll() is not None:
                raise AssertionError(f"the broker exited early:\n{proc.output()[-3000:]}")
            found[:] = _SERVING.findall(proc.stdout.read_text(errors="replace"))
            return bool(found)

        await wait_for(serving, 20, what="the broker to listen", poll_s=0.05)
        yield BrokerProcess(proc, found[0], users_file)


@asynccontextmanager
async def connector_process(
    broker_relay_url: str,
    token: str,
    llm_url: str,
    workdir: Path,
    *,
    name: str = "gpu-box",
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Proc]:
    """``remotellm-connector run``; the token travels in the environment, never in argv."""
    argv = [
        str(BIN / "remotellm-connector"),
        "run",
        "--broker-url",
        broker_relay_url,
        "--llm-url",
        llm_url,
        "--name",
        name,
        "--health-port",
        "0",
        "--log-format",
        "json",
    ]
    settings = {
        "REMOTELLM_CONNECTOR_TOKEN": token,
        "REMOTELLM_CONNECTOR_PING_INTERVAL_S": "1",
        "REMOTELLM_CONNECTOR_PING_TIMEOUT_S": "2",
        "REMOTELLM_CONNECTOR_MODELS_REFRESH_S": "1",
        **(env or {}),
    }
    async with _spawn(f"connector-{name}", argv, workdir, settings) as proc:
        await asyncio.sleep(0)
        yield proc
