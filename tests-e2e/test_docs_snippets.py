"""The docs' Node examples and runnable Python protocol examples work, as written.

``test_docs.py`` runs the curl and openai-Python examples. This runs the rest:

- every ``js`` block (also ``javascript``, ``mjs``) that imports the ``openai`` npm package,
  with Node, against a live broker and connector serving the models the block names, with the
  reader's ``https://llm.example.com`` and ``sk-...`` swapped for the live address and a key;
- every ``python`` block right after ``<!-- docs-test: standalone -->``, as a script on its own;
- every ``python`` block right after ``<!-- docs-test: connector -->``: a connector of the
  reader's own (docs/quickstart/connector-author.md), started against a live broker with
  ``REMOTELLM_CONNECTOR_BROKER_URL`` and ``REMOTELLM_CONNECTOR_TOKEN``; the broker must then
  list its model and relay a plain and a streamed answer through it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from conftest import Relay, wait_models
from harness.modes import E2E_ROOT
from harness.node import NODE_DIR, ensure_node_client
from harness.stack import BrokerHandle, inprocess_connector
from harness.waits import wait_for_async
from remotellm_connector.demo_llm import DemoLLMConfig, serve_demo_llm

REPO = E2E_ROOT.parent
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
_FENCE = re.compile(
    r"(?:^<!-- docs-test: (?P<mark>[\w-]+) -->\n)?^```(?P<lang>\w*)[^\n]*\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
_BASE = re.compile(r"https?://(?:127\.0\.0\.1|localhost):8000|https://[\w.-]+\.example\.com")
_KEY = re.compile(r"sk-(?:\.\.\.|…)|YOUR_API_KEY")
_MODEL = re.compile(r"""\bmodel\s*[:=]\s*["']([^"']+)["']""")
_MARKS = ("standalone", "connector")


@dataclass(frozen=True)
class Snippet:
    source: str  # "docs/quickstart/api-user.md:97"
    kind: str  # "node", "standalone", "connector"
    code: str


def collect() -> list[Snippet]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for fence in _FENCE.finditer(text):
            lang, code, mark = fence.group("lang"), fence.group("code"), fence.group("mark")
            line = text.count("\n", 0, fence.start("code")) + 1
            source = f"{path.relative_to(REPO)}:{line}"
            if mark is not None:
                assert mark in _MARKS, f"{source}: unknown docs-test mark {mark!r}"
                assert lang == "python", f"{source}: a docs-test mark on a {lang!r} block"
                found.append(Snippet(source, mark, code))
            elif lang in ("js", "javascript", "mjs") and re.search(
                r"""from\s+["']openai["']""", code
            ):
                found.append(Snippet(source, "node", code))
    return found


SNIPPETS = collect()


def of_kind(kind: str) -> list[Snippet]:
    return [s for s in SNIPPETS if s.kind == kind]


def test_every_kind_of_snippet_is_found() -> None:
    assert {s.kind for s in SNIPPETS} == {"node", "standalone", "connector"}


async def _run(argv: list[str], *, env: dict[str, str], cwd: Path | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode(errors="replace")


@pytest.mark.parametrize("snippet", of_kind("standalone"), ids=lambda s: s.source)
async def test_a_standalone_python_example_runs(snippet: Snippet) -> None:
    status, output = await _run([sys.executable, "-c", snippet.code], env={})
    assert status == 0, f"{snippet.source} failed ({status}):\n{output[-2000:]}"


@pytest.fixture(scope="session")
def node_client() -> None:
    ensure_node_client()


@pytest.fixture
async def node_relay(broker: BrokerHandle) -> AsyncIterator[Relay]:
    """A relay serving every model the Node examples name."""
    models = tuple(sorted({m for s in of_kind("node") for m in _MODEL.findall(s.code)}))
    key = broker.add_user("reader")
    async with (
        serve_demo_llm(DemoLLMConfig(models=models or ("demo",), tokens=6)) as llm,
        inprocess_connector(broker.relay_url, broker.connector_token(), llm.url) as connector,
    ):
        relay = Relay(broker, connector, key, llm.url)
        await wait_models(relay, set(models))
        yield relay


@pytest.mark.node
@pytest.mark.parametrize("snippet", of_kind("node"), ids=lambda s: s.source)
async def test_a_node_example_works(
    snippet: Snippet, node_client: None, node_relay: Relay, tmp_path: Path
) -> None:
    code = _KEY.sub(node_relay.key, _BASE.sub(node_relay.broker.url, snippet.code))
    script = tmp_path / "example.mjs"
    script.write_text(code, encoding="utf-8")
    # Node resolves `import "openai"` from the script's directory upwards.
    (tmp_path / "node_modules").symlink_to(NODE_DIR / "node_modules", target_is_directory=True)
    status, output = await _run(["node", str(script)], env={}, cwd=tmp_path)
    assert status == 0, f"{snippet.source} failed ({status}):\n{code}\n{output[-2000:]}"
    assert output.strip(), f"{snippet.source} printed nothing"


@pytest.mark.parametrize("snippet", of_kind("connector"), ids=lambda s: s.source)
async def test_a_documented_connector_serves_through_a_live_broker(
    snippet: Snippet, broker: BrokerHandle
) -> None:
    key = broker.add_user("reader")
    env = {
        "REMOTELLM_CONNECTOR_BROKER_URL": broker.relay_url,
        "REMOTELLM_CONNECTOR_TOKEN": broker.connector_token("toy"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        snippet.code,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with openai.AsyncOpenAI(
            base_url=broker.api_url, api_key=key, max_retries=0, timeout=30.0
        ) as client:

            async def listed() -> bool:
                return "echo" in {m.id async for m in client.models.list()}

            await wait_for_async(listed, 20, what=f"{snippet.source} to announce its model")
            words = "hello through the relay"
            reply = await client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": words}]
            )
            assert reply.choices[0].message.content == words
            stream = await client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": words}], stream=True
            )
            streamed = [c.choices[0].delta.content async for c in stream if c.choices]
            assert "".join(s or "" for s in streamed).split() == words.split()
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(10):
            out, _ = await proc.communicate()
    # It ran until we stopped it (or until the broker's goaway), and never crashed.
    assert proc.returncode in (0, -signal.SIGTERM), out.decode(errors="replace")[-2000:]
