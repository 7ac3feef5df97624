"""Secrets never reach a log: the relay token and the LLM key stay out of every line the
connector writes, its libraries' debug lines (websockets prints the handshake headers),
the health port's malformed-request lines and tracebacks included."""

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from broker_peer import BrokerPeer
from conftest import StartConnector
from remotellm_connector.demo_llm import DemoLLMServer
from remotellm_connector.logs import REDACTED, configure_logging, redact_text

REAL_TOKEN = "rct-" + "3f" * 24
OPAQUE_TOKEN = "operator-chose-this-token-0123456789"  # looks like nothing in particular
LLM_KEY = "local-llm-key-abcdefghijklmnop"


class Captured:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]


@pytest.fixture
def logs() -> Iterator[Captured]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    captured = Captured()
    configure_logging("json", "debug", stream=captured.stream, secrets=(REAL_TOKEN, LLM_KEY))
    yield captured
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    structlog.reset_defaults()


@pytest.fixture
async def token_peer() -> Any:
    async with BrokerPeer(token=REAL_TOKEN) as server:
        yield server


async def test_the_relay_token_is_not_in_the_websockets_handshake_debug_lines(
    logs: Captured, token_peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector(
        broker_url=token_peer.url, token=REAL_TOKEN, llm_api_key=LLM_KEY
    )
    conn = await token_peer.next_connection()
    stream = await conn.open(body={"model": "demo", "stream": True, "messages": []})
    await stream.wait_end()
    assert await running.stop() == 0
    websockets_lines = [r for r in logs.records() if r["component"] == "websockets.client"]
    authorization = [r for r in websockets_lines if "Authorization" in r["event"]]
    assert authorization, "websockets logs the handshake at debug level"
    assert all(REDACTED in r["event"] for r in authorization)
    assert any(r["event"] == "relay_up" and r["component"] == "link" for r in logs.records())
    assert REAL_TOKEN not in logs.text
    assert REAL_TOKEN[4:] not in logs.text
    assert LLM_KEY not in logs.text


async def test_malformed_requests_to_the_health_port_log_one_line_and_no_secret(
    logs: Captured, peer: BrokerPeer, start_connector: StartConnector
) -> None:
    running = await start_connector()
    await peer.next_connection()
    assert running.connector.health is not None
    port = running.connector.health.port
    raws = [
        f"GET /healthz HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {REAL_TOKEN}\r\r\n\r\n",
        f"GET /metrics?token={REAL_TOKEN} HTTP/1.x\r\n\r\n",
        f"GET /readyz HTTP/1.1\r\nHost: h\r\nCookie: s={LLM_KEY}\x00\r\n\r\n",
    ]
    for raw in raws:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw.encode())
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        assert answer.split(b"\r\n", 1)[0].endswith(b"400 Bad Request"), answer[:100]
    await running.stop()
    malformed = [r for r in logs.records() if r["event"] == "malformed_http_request"]
    assert [r["status"] for r in malformed] == [400, 400, 400]
    assert all(r["level"] == "warning" and r["component"] == "aiohttp.server" for r in malformed)
    assert REAL_TOKEN not in logs.text
    assert LLM_KEY not in logs.text
    assert "Traceback" not in logs.text


def test_tracebacks_and_fields_are_redacted(logs: Captured) -> None:
    log = structlog.get_logger("remotellm_connector.upstream")
    try:
        raise ConnectionError(f"LLM refused Authorization: Bearer {LLM_KEY} (token={REAL_TOKEN})")
    except ConnectionError:
        log.exception("stream_failed", stream=3, headers={"Authorization": "Bearer x"})
    (line,) = [r for r in logs.records() if r["event"] == "stream_failed"]
    assert "ConnectionError" in line["exception"]
    assert line["headers"] == {"Authorization": REDACTED}
    assert line["component"] == "upstream"
    assert LLM_KEY not in logs.text
    assert REAL_TOKEN not in logs.text


def test_ordinary_text_survives_redaction() -> None:
    text = "relay_up models=3 prompt_tokens=5 tokens=7 token_file=/etc/remotellm/token"
    assert redact_text(text) == text


async def test_run_at_debug_level_never_prints_a_token_of_any_shape(
    demo: DemoLLMServer,
) -> None:
    """The real process: ``run`` registers its token and LLM key with the log boundary."""
    async with BrokerPeer(token=OPAQUE_TOKEN) as peer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTELLM_")}
        env |= {
            "REMOTELLM_CONNECTOR_TOKEN": OPAQUE_TOKEN,
            "REMOTELLM_CONNECTOR_LLM_API_KEY": LLM_KEY,
            "REMOTELLM_CONNECTOR_LOG_LEVEL": "debug",
            "REMOTELLM_CONNECTOR_LOG_FORMAT": "json",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "remotellm_connector", "run",
            "--broker-url", peer.url, "--llm-url", demo.url, "--health-port", "0",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            conn = await peer.next_connection(within=20)
            stream = await conn.open(body={"model": "demo", "stream": True, "messages": []})
            await stream.wait_end()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                _, stderr_bytes = await proc.communicate()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
    stderr = stderr_bytes.decode()
    assert "Authorization: [redacted]" in stderr  # websockets' debug line, redacted
    assert '"event": "request"' in stderr
    assert OPAQUE_TOKEN not in stderr
    assert LLM_KEY not in stderr
