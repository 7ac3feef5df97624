"""Secrets never reach a log: an attacker's malformed requests, aiohttp's own lines, access
logs and tracebacks, captured line by line (structlog and the standard library alike)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from broker_rig import running_broker
from connector_peer import serve_sse
from logcapture import restored_logging
from remotellm_broker.logs import REDACTED, configure_logging, get_logger, redact_text

PROMPT = "the prompt of a user, never logged"
OPAQUE = "vault-made-service-key-0123456789"  # a configured key that looks like nothing


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Captured:
    """Every line the process logs, whatever logged it, after ``configure_logging``."""

    def __init__(self) -> None:
        self.stream: io.StringIO = io.StringIO()

    def configure(self, fmt: str = "json", *, secrets: tuple[str, ...] = ()) -> None:
        self.stream = Terminal() if fmt == "console" else io.StringIO()
        configure_logging(fmt, "debug", stream=self.stream, secrets=secrets)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["event"] == event]


@pytest.fixture
def logs() -> Iterator[Captured]:
    access = logging.getLogger("aiohttp.access")
    saved_access = access.level
    with restored_logging():
        captured = Captured()
        captured.configure()
        yield captured
    access.setLevel(saved_access)


async def send_raw(url: str, raw: bytes) -> bytes:
    """Write ``raw`` on a fresh connection to ``url``'s host and read the answer to EOF."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def malformed_requests(key: str, token: str) -> dict[str, bytes]:
    """Requests aiohttp's parser refuses, each quoting a secret in what it refuses."""
    chat = b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\n"
    cases = {
        # a key read from a file with Windows line endings: "Bearer sk-...\r" + CRLF
        "key_file_with_crlf": f"Authorization: Bearer {key}\r\r\n\r\n",
        "x_api_key_with_nul": f"x-api-key: {key}\x00\r\n\r\n",
        "api_key_with_del": f"api-key: {key}\x7f\r\n\r\n",
        "cookie_with_nul": f"Cookie: AIOHTTP_SESSION={token}\x00\r\n\r\n",
        "header_name_with_space": f"Author ization: Bearer {key}\r\n\r\n",
        "folded_header": f"Authorization: Bearer\r\n {key}\r\n\r\n",
        "header_over_the_limit": f"Authorization: Bearer {key}{'A' * 40_000}\r\n\r\n",
        "custom_header_with_cr": f"X-Forwarded-Key: {key}\r\r\n\r\n",
        "bad_chunk_quoting_body": (
            f"Authorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\nzz{key}{PROMPT}\r\n"
        ),
    }
    raws = {name: chat + text.encode("latin-1") for name, text in cases.items()}
    raws["key_in_query_bad_version"] = f"GET /v1/models?api-key={key} HTTP/1.x\r\n\r\n".encode()
    raws["key_in_query_control_char"] = f"GET /v1/models?key={key}\x01 HTTP/1.1\r\n\r\n".encode()
    raws["relay_token_with_cr"] = (
        f"GET /v1/relay HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\r\n\r\n".encode()
    )
    return raws


async def test_a_key_from_a_file_with_windows_line_endings_never_reaches_the_log(
    tmp_path: Path, logs: Captured
) -> None:
    async with running_broker(tmp_path) as rig:
        raw = (
            "GET /v1/models HTTP/1.1\r\nHost: b\r\n"
            f"Authorization: Bearer {rig.key}\r\r\n\r\n"  # the key file ended in \r\n
        )
        answer = await send_raw(rig.url, raw.encode())
        key = rig.key
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    (line,) = logs.events("malformed_http_request")
    assert line["level"] == "warning"
    assert line["component"] == "aiohttp.server"
    assert line["status"] == 400
    assert line["error"]  # what the parser objected to
    assert line.get("remote", "127.0.0.1") == "127.0.0.1"  # older aiohttp does not say
    assert key not in logs.text
    assert key[3:] not in logs.text  # not even the random part
    assert "Traceback" not in logs.text


async def test_malformed_requests_with_real_keys_log_one_line_each_and_no_secret(
    tmp_path: Path, logs: Captured
) -> None:
    async with running_broker(tmp_path) as rig:
        raws = malformed_requests(rig.key, rig.token)
        for name, raw in raws.items():
            answer = await send_raw(rig.url, raw)
            assert b" 400 " in answer.split(b"\r\n", 1)[0], (name, answer[:200])
        key, token = rig.key, rig.token
    assert len(logs.events("malformed_http_request")) == len(raws)
    for secret in (key, key[3:], token, token[4:], PROMPT):
        assert secret not in logs.text
    assert "Traceback" not in logs.text


async def test_a_relayed_request_logs_no_key_token_cookie_or_prompt_even_at_debug(
    tmp_path: Path, logs: Captured
) -> None:
    async with running_broker(tmp_path) as rig:
        await rig.peer(script=serve_sse(2))
        body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
        headers = {**rig.auth, "Cookie": "AIOHTTP_SESSION=portal-cookie-value"}
        async with rig.http.post(
            rig.url + "/v1/chat/completions?api-key=" + rig.key, json=body, headers=headers
        ) as resp:
            assert resp.status == 200
            await resp.read()
        async with rig.http.get(
            rig.url + "/v1/models", headers={"x-api-key": rig.key, "api-key": rig.key}
        ) as resp:
            await resp.read()
        key, token = rig.key, rig.token
    assert any(r.get("status") == 200 for r in logs.events("request"))
    for secret in (key, token, PROMPT, "portal-cookie-value"):
        assert secret not in logs.text


async def test_access_log_lines_are_redacted(logs: Captured) -> None:
    # The broker turns aiohttp's access log off; an operator or a new runner that turns it on
    # still cannot leak a key through it (query strings and headers included).
    key = "sk-" + "5a" * 16
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)

    async def models(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log_format='%a "%r" %s "%{Authorization}i" "%{User-Agent}i"')
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        headers = {"Authorization": f"Bearer {key}", "User-Agent": f"agent/1 key={key}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/v1/models?api-key={key}", headers=headers) as resp,
        ):
            assert resp.status == 200
    finally:
        await runner.cleanup()
    (line,) = [r for r in logs.records() if r["component"] == "aiohttp.access"]
    assert "GET /v1/models?api-key=[redacted]" in line["event"]
    assert key not in logs.text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_are_redacted_in_json_and_on_a_terminal(logs: Captured, fmt: str) -> None:
    logs.configure(fmt)
    key, token = "sk-" + "7c" * 16, "rct-" + "e1" * 24
    try:
        raise RuntimeError(f"upstream said: Authorization: Bearer {key} rejected, token={token}")
    except RuntimeError:
        get_logger("remotellm_broker.app").exception("unhandled_error", path="/v1/x")
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    assert logs.text.count("RuntimeError") >= 2
    assert key not in logs.text
    assert token not in logs.text


def test_fields_named_like_secrets_lose_their_value_whatever_it_is(logs: Captured) -> None:
    log = get_logger("remotellm_broker.api")
    log.info(
        "request",
        authorization="Basic dXNlcjpwYXNz",
        api_key="short",
        token="t0k3n",
        headers={"Cookie": "a=b", "X-Api-Key": "xyz", "Content-Type": "application/json"},
        model="m",
        prompt_tokens=3,
        key_id="k-0011223344556677",
    )
    (line,) = logs.events("request")
    assert line["authorization"] == line["api_key"] == line["token"] == REDACTED
    assert line["headers"] == {
        "Cookie": REDACTED,
        "X-Api-Key": REDACTED,
        "Content-Type": "application/json",
    }
    assert (line["model"], line["prompt_tokens"], line["key_id"]) == ("m", 3, "k-0011223344556677")
    assert line["component"] == "api"


def test_secrets_the_process_was_configured_with_are_redacted_whatever_their_shape(
    logs: Captured,
) -> None:
    logs.configure(secrets=(OPAQUE, "short"))  # under 8 characters: too common to register
    get_logger("remotellm_broker.users").warning("odd", detail=f"saw {OPAQUE} in a file")
    logging.getLogger("aiohttp.server").warning("peer sent %s", OPAQUE)
    get_logger("remotellm_broker.users").info("note", detail="a short note")
    assert OPAQUE not in logs.text
    assert logs.text.count(REDACTED) == 2
    assert logs.events("note")[0]["detail"] == "a short note"


def test_what_is_not_a_secret_survives_redaction() -> None:
    plain = (
        "key sk-1a2b… of local:alice, a basic check, prompt_tokens=3 completion_tokens=4, "
        "tokens=7, token_file=/etc/t, session=s1, Bearer tokens are secrets, cookies: 2"
    )
    assert redact_text(plain) == plain


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer sk-x\r\n", f"Authorization: {REDACTED}\r\n"),
        ("{'authorization': 'Basic YWxhZGRpbjpvcGVu'}", f"{{'authorization': '{REDACTED}'}}"),
        ('"Cookie": "a=1; b=2"', f'"Cookie": "{REDACTED}"'),
        ("Set-Cookie: s=1; HttpOnly", f"Set-Cookie: {REDACTED}"),
        ("x-api-key: abc\\r", f"x-api-key: {REDACTED}\\r"),
        ("GET /m?api_key=abc&x=1 HTTP/1.1", f"GET /m?api_key={REDACTED}&x=1 HTTP/1.1"),
        ("retry with token=abc, then", f"retry with token={REDACTED}, then"),
        ("bearer abcdefgh1234", f"bearer {REDACTED}"),
        ("sent sk-proj-AbC_12345678", f"sent {REDACTED}"),
        ("token rct-" + "0" * 48 + ".", f"token {REDACTED}."),
    ],
)
def test_redaction_rules(text: str, expected: str) -> None:
    assert redact_text(text) == expected


async def test_serve_never_logs_a_configured_key_of_any_shape(tmp_path: Path) -> None:
    """The real process: ``serve`` registers its configured keys with the log boundary."""
    binary = Path(sys.executable).parent / "remotellm-broker"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTELLM_")}
    env |= {
        "REMOTELLM_BROKER_API_KEYS": OPAQUE,
        "REMOTELLM_BROKER_LOG_FORMAT": "json",
        "REMOTELLM_BROKER_LOG_LEVEL": "debug",
    }
    proc = await asyncio.create_subprocess_exec(
        str(binary), "serve", "--port", "0", "--health-port", "0",
        cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[bytes] = []
    try:
        url = ""
        async with asyncio.timeout(30):
            while not url:
                line = await proc.stderr.readline()
                assert line, "the broker exited before listening"
                seen.append(line)
                if b'"broker_listening"' in line:
                    url = json.loads(line)["url"]
        for raw in malformed_requests(OPAQUE, OPAQUE).values():
            await send_raw(url, raw)
        headers = {"Authorization": f"Bearer {OPAQUE}", "X-Note": f"mine is {OPAQUE}"}
        await _get(url + "/v1/models", headers)
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(30):
            _, rest = await proc.communicate()
    stderr = b"".join(seen).decode() + rest.decode()
    assert stderr.count('"malformed_http_request"') == len(malformed_requests("k", "t"))
    assert '"request"' in stderr
    assert OPAQUE not in stderr


async def _get(url: str, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        assert resp.status == 200
