"""The coding agents people point at the broker, each finishing a small task through broker +
connector: Claude Code (``claude -p``, Anthropic Messages), the Codex CLI (``codex exec``, a
custom provider on the Responses API) and the Cline CLI (headless, an OpenAI-compatible
provider on chat completions). The demo LLM is scripted by a ``[[demo-reply …]]`` marker in the
prompt: the first turn calls the agent's own file-writing tool, the tool's result gets text,
and the agent ends its turn. Each CLI also meets a wrong key, a 429 and a connector killed
mid-stream, and must fail the way it normally does (non-zero exit, the status in its report).

The CLIs are the pinned versions of agent_clis/package.json, installed once into
~/.cache/remotellm/npm; they run sealed (private HOME, telemetry and updates off, every
non-loopback request sent to a trap that must stay empty).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import DEMO_MODEL, Relay
from harness.agents import AgentRun, ProxyTrap, proxy_trap, run_agent, sealed_env
from harness.clientkit import WRONG_KEY, demo_reply, kill_connector_mid_stream, limited_relay
from remotellm_connector.demo_llm import DemoLLMServer

pytestmark = [pytest.mark.clients, pytest.mark.slow]

SLOW_REPLY = {"tokens": 400, "gap_ms": 25}


@dataclass
class Sandbox:
    home: Path
    work: Path
    trap: ProxyTrap
    unavoidable: frozenset[str] = frozenset()
    """Destinations a CLI contacts with no switch to stop it; the trap refuses them."""

    def env(self, **extra: str) -> dict[str, str]:
        return sealed_env(self.home, self.trap, extra)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Sandbox]:
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    async with proxy_trap() as trap:
        box = Sandbox(tmp_path / "home", tmp_path / "work", trap)
        yield box
    escaped = [a for a in trap.attempts if not any(f" {d} " in a for d in box.unavoidable)]
    assert escaped == [], f"a CLI tried to leave 127.0.0.1: {escaped}"


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Relay]:
    (tmp_path / "limited").mkdir()
    async with limited_relay(tmp_path / "limited") as relay:
        yield relay


async def kill_during(run: asyncio.Task[AgentRun], relay: Relay, llm: DemoLLMServer) -> AgentRun:
    await kill_connector_mid_stream(relay, llm)
    return await run


# -- Claude Code -----------------------------------------------------------------------------


async def claude(box: Sandbox, relay: Relay, prompt: str, *, key: str | None = None) -> AgentRun:
    env = box.env(
        ANTHROPIC_BASE_URL=relay.broker.url,
        ANTHROPIC_API_KEY=key or relay.key,
        ANTHROPIC_MODEL=DEMO_MODEL,
        ANTHROPIC_SMALL_FAST_MODEL=DEMO_MODEL,
        ANTHROPIC_DEFAULT_HAIKU_MODEL=DEMO_MODEL,
        ANTHROPIC_DEFAULT_SONNET_MODEL=DEMO_MODEL,
        ANTHROPIC_DEFAULT_OPUS_MODEL=DEMO_MODEL,
    )
    argv = ["claude", "-p", prompt, "--output-format", "json", "--max-turns", "4"]
    argv += ["--permission-mode", "acceptEdits", "--allowedTools", "Write"]
    return await run_agent(argv, env=env, cwd=box.work)


def claude_report(run: AgentRun) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return report


async def test_claude_code_writes_a_file_through_the_broker(box: Sandbox, relay: Relay) -> None:
    target = box.work / "hello.txt"
    write = {"name": "Write", "arguments": {"file_path": str(target), "content": "hello\n"}}
    run = await claude(box, relay, "Create hello.txt " + demo_reply(tool_calls=[write]))
    assert run.returncode == 0, run.output
    assert target.read_text() == "hello\n"
    report = claude_report(run)
    assert report["is_error"] is False
    assert report["num_turns"] == 2
    assert report["result"].startswith("tok0-")


async def test_claude_code_reports_a_wrong_key_and_a_429(
    box: Sandbox, relay: Relay, limited: Relay
) -> None:
    wrong = await claude(box, relay, "hi", key=WRONG_KEY)
    assert wrong.returncode != 0
    assert claude_report(wrong)["is_error"] is True
    assert claude_report(wrong)["api_error_status"] == 401
    refused = await claude(box, limited, "hi")
    assert refused.returncode != 0
    assert claude_report(refused)["api_error_status"] == 429


async def test_claude_code_reports_a_connector_killed_mid_stream(
    box: Sandbox, relay: Relay, demo_llm: DemoLLMServer
) -> None:
    run = asyncio.create_task(claude(box, relay, "Talk " + demo_reply(**SLOW_REPLY)))
    cut = await kill_during(run, relay, demo_llm)
    assert cut.returncode != 0, cut.output
    report = claude_report(cut)
    assert report["is_error"] is True
    assert "tok399" not in report.get("result", "")


# -- Codex CLI -------------------------------------------------------------------------------

CODEX_CONFIG = """\
model = "{model}"
model_provider = "remotellm"
check_for_update_on_startup = false

[model_providers.remotellm]
name = "remotellm"
base_url = "{base_url}"
env_key = "REMOTELLM_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

# plugins sync a curated catalog from chatgpt.com and github.com at start
[features]
plugins = false
remote_plugin = false
apps = false
"""


async def codex(box: Sandbox, relay: Relay, prompt: str, *, key: str | None = None) -> AgentRun:
    codex_home = box.home / ".codex"
    codex_home.mkdir(exist_ok=True)
    config = CODEX_CONFIG.format(model=DEMO_MODEL, base_url=relay.api_url)
    (codex_home / "config.toml").write_text(config, encoding="utf-8")
    env = box.env(CODEX_HOME=str(codex_home), REMOTELLM_API_KEY=key or relay.key)
    argv = ["codex", "exec", "--skip-git-repo-check", "--sandbox", "workspace-write", prompt]
    return await run_agent(argv, env=env, cwd=box.work)


async def test_codex_runs_a_command_through_the_broker(box: Sandbox, relay: Relay) -> None:
    command = {"name": "exec_command", "arguments": {"cmd": "printf 'hello\\n' > hello.txt"}}
    run = await codex(box, relay, "Create hello.txt " + demo_reply(tool_calls=[command]))
    assert run.returncode == 0, run.output
    assert (box.work / "hello.txt").read_text() == "hello\n"
    assert "tok0-" in run.stdout


async def test_codex_reports_a_wrong_key_and_a_429(
    box: Sandbox, relay: Relay, limited: Relay
) -> None:
    wrong = await codex(box, relay, "hi", key=WRONG_KEY)
    assert wrong.returncode != 0
    assert "401" in wrong.output
    refused = await codex(box, limited, "hi")
    assert refused.returncode != 0
    assert "429" in refused.output or "rate limit" in refused.output.lower()


async def test_codex_reports_a_connector_killed_mid_stream(
    box: Sandbox, relay: Relay, demo_llm: DemoLLMServer
) -> None:
    run = asyncio.create_task(codex(box, relay, "Talk " + demo_reply(**SLOW_REPLY)))
    cut = await kill_during(run, relay, demo_llm)
    assert cut.returncode != 0, cut.output
    assert "tok399" not in cut.stdout


# -- Cline CLI -------------------------------------------------------------------------------


CLINE_SETTINGS = {"telemetryOptOut": True, "autoUpdateEnabled": False}
"""Cline's global settings: without the opt-out it sends OpenTelemetry and PostHog events."""
CLINE_FEATURE_FLAGS = "data.cline.bot:443"
"""Cline 3.0.65 asks PostHog for feature flags whatever the settings say (its flag client is
built with ``enabled: true``); the trap refuses the connection and Cline carries on."""


async def cline(
    box: Sandbox, relay: Relay, prompt: str, *, key: str | None = None, within: float = 90
) -> AgentRun:
    box.unavoidable = frozenset({CLINE_FEATURE_FLAGS})
    settings = box.home / ".cline" / "data" / "settings" / "global-settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(CLINE_SETTINGS), encoding="utf-8")
    env = box.env(CLINE_GLOBAL_SETTINGS_PATH=str(settings))
    auth = ["cline", "auth", "--provider", "openai", "--apikey", key or relay.key]
    auth += ["--modelid", DEMO_MODEL, "--baseurl", relay.api_url]
    configured = await run_agent(auth, env=env, cwd=box.work)
    assert configured.returncode == 0, configured.output
    return await run_agent(["cline", "--json", prompt], env=env, cwd=box.work, within=within)


def cline_error(run: AgentRun) -> str:
    """The message of the error event Cline prints (NDJSON) when a run fails."""
    for line in run.output.splitlines():
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("type") == "error":
            return str(event["message"])
    raise AssertionError(f"no error event from cline:\n{run.output[-3000:]}")


def cline_result(run: AgentRun) -> dict[str, Any]:
    for line in reversed(run.stdout.splitlines()):
        if line.startswith("{") and '"type":"run_result"' in line:
            result: dict[str, Any] = json.loads(line)
            return result
    raise AssertionError(f"no run_result from cline:\n{run.output[-3000:]}")


async def test_cline_edits_a_file_through_the_broker(box: Sandbox, relay: Relay) -> None:
    target = box.work / "hello.txt"
    edit = {"name": "editor", "arguments": {"path": str(target), "new_text": "hello\n"}}
    run = await cline(box, relay, "Create hello.txt " + demo_reply(tool_calls=[edit]))
    assert run.returncode == 0, run.output
    assert target.read_text() == "hello\n"
    result = cline_result(run)
    assert result["finishReason"] == "completed"
    assert result["text"].startswith("tok0-")


async def test_cline_reports_a_wrong_key(box: Sandbox, relay: Relay) -> None:
    wrong = await cline(box, relay, "say hi", key=WRONG_KEY)
    assert wrong.returncode != 0
    assert "API key" in cline_error(wrong), wrong.output


@pytest.mark.timeout(300)
async def test_cline_reports_a_429(box: Sandbox, relay: Relay) -> None:
    """Cline retries a 429 after its Retry-After (the broker's own limit says ~60 s, longer
    than a test should wait), so its 429 comes from the model server, on every attempt."""
    prompt = "say hi " + demo_reply(status=429, retry_after=1)
    refused = await cline(box, relay, prompt, within=240)
    assert refused.returncode != 0
    assert "429" in refused.output or "rate limit" in cline_error(refused).lower(), refused.output


async def test_cline_reports_a_connector_killed_mid_stream(
    box: Sandbox, relay: Relay, demo_llm: DemoLLMServer
) -> None:
    run = asyncio.create_task(cline(box, relay, "Talk " + demo_reply(**SLOW_REPLY)))
    cut = await kill_during(run, relay, demo_llm)
    assert cut.returncode != 0, cut.output
    assert "tok399" not in cut.stdout
