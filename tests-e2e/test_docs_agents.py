"""The documented agent CLI commands work, as written: every ``bash`` block right after
``<!-- docs-test-agent: NAME -->`` (Claude Code, Codex, Cline in docs/quickstart/api-user.md)
runs in a sealed shell (harness.agents: private HOME, the pinned CLIs on PATH, no way off
127.0.0.1) against a live broker and connector, with the reader's ``https://llm.example.com``
and ``sk-...`` swapped for the live address and a key. It must exit 0 and print the model's
answer.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import Relay, wait_models
from harness.agents import proxy_trap, run_agent, sealed_env
from harness.modes import E2E_ROOT
from harness.stack import BrokerHandle, inprocess_connector
from remotellm_connector.demo_llm import DemoLLMConfig, serve_demo_llm

pytestmark = [pytest.mark.clients, pytest.mark.slow]

REPO = E2E_ROOT.parent
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
MODEL = "qwen2.5-coder:32b"
"""The model every agent example names (the demo LLM serves it)."""
_BLOCK = re.compile(
    r"^<!-- docs-test-agent: (?P<name>[\w-]+) -->\n```bash\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
_BASE = re.compile(r"https://[\w.-]+\.example\.com")
_KEY = re.compile(r"sk-(?:\.\.\.|…)")


def collect() -> list[tuple[str, str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in _BLOCK.finditer(text):
            line = text.count("\n", 0, block.start("code")) + 1
            found.append((f"{path.relative_to(REPO)}:{line}", block["name"], block["code"]))
    return found


BLOCKS = collect()


def test_every_agent_is_documented() -> None:
    assert sorted(name for _, name, _ in BLOCKS) == ["claude", "cline", "codex"]
    assert all(MODEL in code for _, _, code in BLOCKS), f"agent examples must use {MODEL}"


@pytest.fixture
async def docs_relay(broker: BrokerHandle) -> AsyncIterator[Relay]:
    key = broker.add_user("reader")
    async with (
        serve_demo_llm(DemoLLMConfig(models=(MODEL,), tokens=6)) as llm,
        inprocess_connector(broker.relay_url, broker.connector_token(), llm.url) as connector,
    ):
        relay = Relay(broker, connector, key, llm.url)
        await wait_models(relay, {MODEL})
        yield relay


@pytest.mark.parametrize(("source", "name", "code"), BLOCKS, ids=[b[0] for b in BLOCKS])
async def test_a_documented_agent_command_works(
    source: str, name: str, code: str, docs_relay: Relay, tmp_path: Path
) -> None:
    script = _KEY.sub(docs_relay.key, _BASE.sub(docs_relay.broker.url, code))
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    async with proxy_trap() as trap:
        env = sealed_env(tmp_path / "home", trap, {})
        run = await run_agent(["bash", "-euc", script], env=env, cwd=tmp_path / "work")
    assert run.returncode == 0, f"{source} ({name}) failed:\n{script}\n{run.output[-3000:]}"
    assert "tok0-" in run.stdout, f"{source} ({name}) printed no answer:\n{run.output[-3000:]}"
