"""The documented commands work: every curl example in README.md and docs/, the Python
examples there that use the openai, anthropic or openai-agents SDK, and the README's run
command (``scripts/demo.py``), against a live relay.

Examples are written for a reader (``http://127.0.0.1:8000``, ``https://llm.example.com``,
``sk-...``); the test swaps in the live broker's URL and a real key, serves every model name
the examples use from the demo LLM, and runs the command otherwise as written (curl gets
``-sS --fail-with-body`` so an HTTP error fails the test). Docs cannot rot unnoticed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Relay, wait_models
from harness.modes import E2E_ROOT
from harness.stack import BrokerHandle, inprocess_connector
from remotellm_connector.demo_llm import DemoLLMConfig, serve_demo_llm

REPO = E2E_ROOT.parent
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_CURL = re.compile(r"(?:^|\$ |: )(curl\s.+)$")
_BASE = re.compile(r"https?://(?:127\.0\.0\.1|localhost):8000|https://[\w.-]+\.example\.com")
_KEY = re.compile(r"sk-(?:\.\.\.|…|[0-9a-f]{4}…|YOUR[_-]KEY)|YOUR_API_KEY|YOUR_KEY")
_MODEL = re.compile(r"""["']?model["']?\s*[:=]\s*["']([^"']+)["']""")
_SDK_IMPORT = r"^\s*(from openai|import openai|from anthropic|import anthropic|from agents)"
# The last event of a complete stream, per API (a broken one must not end with it).
_STREAM_END = {
    "/v1/responses": "event: response.completed",
    "/v1/messages": "event: message_stop",
}


@dataclass(frozen=True)
class Example:
    source: str  # "docs/broker.md:42"
    language: str  # "shell" or "python"
    code: str

    @property
    def models(self) -> set[str]:
        return set(_MODEL.findall(self.code))


def _shell_commands(block: str) -> list[str]:
    """Logical lines (backslash continuations joined) that run curl against /v1."""
    joined = re.sub(r"\\\n\s*", " ", block)
    found = []
    for line in joined.splitlines():
        match = _CURL.search(line.strip())
        if match and "/v1/" in match.group(1):
            found.append(match.group(1).split("  #")[0].strip())
    return found


def collect_examples() -> list[Example]:
    examples = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for fence in _FENCE.finditer(text):
            language, block = fence.group(1).lower(), fence.group(2)
            line = text.count("\n", 0, fence.start()) + 2
            source = f"{path.relative_to(REPO)}:{line}"
            if language in ("", "sh", "bash", "shell", "console", "zsh"):
                examples += [Example(source, "shell", c) for c in _shell_commands(block)]
            elif language == "python" and re.search(_SDK_IMPORT, block, re.M):
                examples.append(Example(source, "python", block))
    return examples


EXAMPLES = collect_examples()


def test_the_docs_have_runnable_examples() -> None:
    assert any(e.language == "shell" for e in EXAMPLES), "no curl example found in the docs"


@pytest.fixture
async def docs_relay(broker: BrokerHandle) -> AsyncIterator[Relay]:
    """A relay serving every model name the examples mention."""
    models = tuple(sorted(set().union(*(e.models for e in EXAMPLES)) or {"demo"}))
    key = broker.add_user("reader")
    async with (
        serve_demo_llm(DemoLLMConfig(models=models, tokens=6)) as llm,
        inprocess_connector(broker.relay_url, broker.connector_token(), llm.url) as connector,
    ):
        relay = Relay(broker, connector, key, llm.url)
        await wait_models(relay, set(models))
        yield relay


def localized(code: str, relay: Relay) -> str:
    return _KEY.sub(relay.key, _BASE.sub(relay.broker.url, code))


async def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode(errors="replace")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.source for e in EXAMPLES])
async def test_a_documented_command_works(example: Example, docs_relay: Relay) -> None:
    code = localized(example.code, docs_relay)
    env = {
        "OPENAI_BASE_URL": docs_relay.api_url,
        "OPENAI_API_KEY": docs_relay.key,
        "REMOTELLM_API_KEY": docs_relay.key,
    }
    if example.language == "shell":
        argv = shlex.split(code)
        argv[1:1] = ["-sS", "--fail-with-body", "--max-time", "30"]
        status, output = await _run(argv, env)
    else:
        status, output = await _run([sys.executable, "-c", code], env)
    assert status == 0, f"{example.source} failed ({status}):\n{code}\n{output[-2000:]}"
    assert output.strip(), f"{example.source} printed nothing"
    if '"stream": true' in code.replace("True", "true"):
        path = next((p for p in _STREAM_END if p in code), None)
        assert (_STREAM_END[path] if path else "data: [DONE]") in output


@pytest.mark.slow
async def test_the_readme_run_command_streams_a_reply(tmp_path: Path) -> None:
    """``hatch run demo:up`` is ``python scripts/demo.py``; ``--once`` streams one reply."""
    status, output = await _run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo.py"),
            "--once",
            "--demo-llm",
            "--workdir",
            str(tmp_path),
        ],
        {},
    )
    assert status == 0, output[-3000:]
    reply = re.search(r"\* streamed reply: '(.+)'", output)
    assert reply is not None, output[-3000:]
    assert reply.group(1).startswith("tok0-")


def test_a_rerun_of_the_demo_gets_its_port_back_while_old_connections_linger() -> None:
    """Rerunning ``hatch run demo:up`` right after Ctrl-C moved the broker off port 8000: the
    last run's connections in TIME_WAIT made the port look taken to ``free_port``."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import demo
    finally:
        sys.path.remove(str(REPO / "scripts"))
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server closes first: its side waits in TIME_WAIT
            assert client.recv(1) == b""
    assert demo.free_port(port) == port
