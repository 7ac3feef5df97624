"""``remotellm-connector check``: is everything in place? A plain report, a fix per failure.

It probes the two ends the daemon needs, the way the daemon uses them:

- the LLM server: ``GET /v1/models`` at ``--llm-url`` (or autodetected), models listed with
  their context length, and which of the Responses and Messages APIs it answers (``endpoints``);
- the broker: dial ``/v1/relay`` with the token, negotiate the wire version, ``hello`` /
  ``welcome``, then ``goaway`` and close. The check says hello under ``<name>-check`` with no
  models, so it never replaces the running daemon's connection nor receives a request.

Exit status 0 only if both are fine.
"""

import sys
from dataclasses import dataclass
from typing import TextIO

from remotellm_connector.__about__ import __version__
from remotellm_connector.config import (
    ConfigError,
    ConnectorSettings,
    normalize_broker_url,
    normalize_llm_url,
    read_token,
)
from remotellm_connector.discovery import (
    CANDIDATES,
    PROBE_TIMEOUT_S,
    LLMError,
    detect_llm,
    list_models,
)
from remotellm_connector.endpoints import BASELINE, probe_endpoints
from remotellm_connector.link import explain_connect_error, open_relay
from remotellm_connector.upstream import Upstream
from remotellm_protocol import CloseCode, GoAway, Hello

__all__ = ["Finding", "check_broker", "check_llm", "run_check"]


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    what: str
    ok: bool
    target: str
    detail: str
    fix: str = ""

    def render(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"{self.what:<7} {mark}  {self.target}\n        {self.detail}"
        if self.fix:
            text += f"\n        fix: {self.fix}"
        return text


async def check_llm(settings: ConnectorSettings) -> Finding:
    """Can the connector list the LLM server's models?"""
    async with Upstream(None, api_key=settings.llm_api_key) as upstream:
        if settings.llm_url:
            url = normalize_llm_url(settings.llm_url)
        else:
            found = await detect_llm(upstream.session, upstream.auth_headers())
            if found is None:
                ports = ", ".join(u.rsplit(":", 1)[1] for _, u in CANDIDATES)
                return Finding(
                    "LLM",
                    False,
                    "autodetect",
                    f"no LLM server answered GET /v1/models on 127.0.0.1 ports {ports}",
                    "start your LLM server (ollama serve, llama-server, vllm serve, LM Studio's "
                    "server) or pass --llm-url http://HOST:PORT",
                )
            url = found[1]
        try:
            models = await list_models(upstream.session, url, upstream.auth_headers())
        except LLMError as exc:
            return Finding("LLM", False, url, str(exc), _llm_fix(exc))
        endpoints = await probe_endpoints(
            upstream.session, url, upstream.auth_headers(), PROBE_TIMEOUT_S
        )
    if not models:
        return Finding(
            "LLM", False, url, "the server lists no models", "load or pull a model first"
        )
    listed = ", ".join(
        m.id + (f" (context {m.context_length})" if m.context_length else "") for m in models
    )
    extra = ", ".join(e for e in endpoints if e not in BASELINE) or "none (chat completions only)"
    detail = f"{len(models)} model(s): {listed}\n        also answers: {extra}"
    return Finding("LLM", True, url, detail)


def _llm_fix(exc: LLMError) -> str:
    if exc.kind == "refused":
        return "start the LLM server, or fix the host/port in --llm-url"
    if exc.kind == "timeout":
        return "the server is up but not answering: is it still loading a model?"
    if exc.status in (401, 403):
        return "the server wants a key: set REMOTELLM_CONNECTOR_LLM_API_KEY"
    if exc.status == 404 or exc.kind == "invalid":
        return (
            "this is not an OpenAI-compatible API: give the server's base URL, "
            "e.g. http://127.0.0.1:11434 (Ollama) or http://127.0.0.1:8080 (llama.cpp)"
        )
    return "look at the LLM server's own log"


async def check_broker(settings: ConnectorSettings) -> Finding:
    """Can the connector reach the broker, authenticate and complete the handshake?"""
    if settings.broker_url is None:
        return Finding(
            "broker",
            False,
            "(not set)",
            "no broker URL",
            "pass --broker-url wss://broker.example.com or set REMOTELLM_CONNECTOR_BROKER_URL",
        )
    url = normalize_broker_url(settings.broker_url)
    try:
        token = read_token(settings)
    except ConfigError as exc:
        return Finding("broker", False, url, str(exc), "")
    hello = Hello(name=f"{settings.name}-check"[:64], version=__version__, models=[], max_streams=1)
    try:
        ws, session, welcome = await open_relay(url, token, hello, ping_interval=None)
    except Exception as exc:
        problem, fix = explain_connect_error(exc)
        return Finding("broker", False, url, problem, fix)
    try:
        await ws.send(session.send(GoAway(reason="check done")))
    finally:
        await ws.close(CloseCode.NORMAL, "check done")
    return Finding(
        "broker",
        True,
        url,
        f"authenticated, wire version {ws.subprotocol}, session {welcome.session_id}, "
        f"window {welcome.initial_window} bytes",
    )


async def run_check(settings: ConnectorSettings, out: TextIO = sys.stdout) -> int:
    """Print the report; 0 if both ends are fine, else 1."""
    findings = [await check_llm(settings), await check_broker(settings)]
    print(f"remotellm-connector {__version__} check ({settings.name})", file=out)
    for finding in findings:
        print(finding.render(), file=out)
    ok = all(f.ok for f in findings)
    print("all good" if ok else "problems found", file=out)
    return 0 if ok else 1
