"""The command line: flag names, start-up errors, and the real process under SIGTERM."""

import asyncio
import json
import os
import signal
import sys
from typing import Any

from click.testing import CliRunner

from broker_peer import TOKEN, BrokerPeer, error_code
from remotellm_connector.cli import main
from remotellm_connector.demo_llm import DemoLLMServer

CONTRACT_FLAGS = [
    "--broker-url",
    "--llm-url",
    "--name",
    "--health-host",
    "--health-port",
    "--config",
    "--max-streams",
    "--max-retries",
    "--token-file",
]


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    """Run the CLI in-process, blind to any REMOTELLM_CONNECTOR_* of the developer's shell."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("REMOTELLM_")}
    return CliRunner().invoke(main, list(args), env={**clean, **(env or {})})


def test_run_and_check_take_the_contract_flags_and_no_token_flag() -> None:
    for command in ("run", "check"):
        help_text = invoke(command, "--help").output
        for flag in CONTRACT_FLAGS:
            assert flag in help_text, (command, flag)
        assert "--token " not in help_text


def test_demo_llm_is_a_subcommand() -> None:
    assert "--ttft-ms" in invoke("demo-llm", "--help").output


def test_bad_config_value_stops_start_up_with_one_line() -> None:
    result = invoke("run", env={"REMOTELLM_CONNECTOR_MAX_STREAMS": "many"})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "max_streams = 'many'" in lines[0]
    assert "REMOTELLM_CONNECTOR_MAX_STREAMS" in lines[0]


def test_run_without_a_broker_url_says_how_to_set_one() -> None:
    result = invoke("run")
    assert result.exit_code == 2
    assert "--broker-url" in result.output


def test_run_without_a_token_says_where_to_put_one() -> None:
    result = invoke("run", "--broker-url", "https://b.example")
    assert result.exit_code == 2
    assert "REMOTELLM_CONNECTOR_TOKEN" in result.output


def test_config_file_comes_from_the_environment_too(tmp_path: Any) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("health_port: -1\n")
    result = invoke("run", env={"REMOTELLM_CONNECTOR_CONFIG": str(config)})
    assert result.exit_code == 2
    assert "health_port = -1" in result.output


async def test_sigterm_drains_the_stream_and_exits_zero_with_json_logs(
    peer: BrokerPeer, demo: DemoLLMServer
) -> None:
    env = {**os.environ, "REMOTELLM_CONNECTOR_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remotellm_connector", "run",
        "--broker-url", peer.url, "--llm-url", demo.url, "--name", "proc",
        "--health-port", "0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        conn = await peer.next_connection(within=20)
        secret = "the prompt text must never be logged"
        body = {
            "model": "demo",
            "stream": True,
            "max_tokens": 40,
            "x_gap_ms": 15,
            "messages": [{"role": "user", "content": secret}],
        }
        stream = await conn.open(body=body, correlation_id="corr-42")
        await stream.wait_bytes(1)
        proc.send_signal(signal.SIGTERM)
        end = await stream.wait_end()
        assert error_code(end) is None
        assert stream.sse_payloads()[-1] == "[DONE]"
        async with asyncio.timeout(15):
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    request = next(line for line in lines if line["event"] == "request")
    assert request["correlation_id"] == "corr-42"
    assert request["user_id"] == "local:alice"
    assert request["model"] == "demo"
    assert request["status"] == 200
    assert request["completion_tokens"] == 40
    assert request["ttfb_ms"] is not None
    assert secret not in stderr.decode()
    assert TOKEN not in stderr.decode()
    assert conn.goaway is not None


async def test_second_sigterm_exits_at_once_with_an_error(
    peer: BrokerPeer, demo: DemoLLMServer
) -> None:
    env = {**os.environ, "REMOTELLM_CONNECTOR_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remotellm_connector", "run",
        "--broker-url", peer.url, "--llm-url", demo.url, "--health-port", "0",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        conn = await peer.next_connection(within=20)
        body = {"model": "demo", "stream": True, "max_tokens": 10_000, "x_gap_ms": 20}
        stream = await conn.open(body={**body, "messages": []})
        await stream.wait_bytes(1)
        proc.send_signal(signal.SIGTERM)
        await conn.wait_until(lambda: conn.goaway is not None)
        proc.send_signal(signal.SIGTERM)
        end = await stream.wait_end()
        assert end.error is not None
        async with asyncio.timeout(10):
            assert await proc.wait() == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
