"""The recorded interactions: what is recorded, how it is scrubbed, how it is read back.

One cassette file per interaction (``cassettes/<name>.yaml``), written by vcrpy while an
aiohttp client talks to a real OpenAI-compatible server (see ``record.py``). The requests
are built here from a model id, so the same catalogue records the local llama.cpp server or a
hosted endpoint (``REMOTELLM_E2E_MODE=record`` + ``REMOTELLM_E2E_LLM_URL``).

Streaming requests are recorded with ``stream_options.include_usage`` set, because that is
what the connector sends upstream even when the client did not ask (it strips the extra
chunk on the way back): the replay server then sees the very body that was recorded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import vcr
from vcr.persisters.filesystem import FilesystemPersister
from vcr.serializers import yamlserializer

from harness.modes import E2E_ROOT

__all__ = [
    "CASSETTE_DIR",
    "CATALOGUE",
    "SCRUBBED_REQUEST_HEADERS",
    "Interaction",
    "Recordable",
    "load_interactions",
    "recorder",
]

CASSETTE_DIR = Path(os.environ.get("REMOTELLM_E2E_CASSETTES") or E2E_ROOT / "cassettes")
"""Where cassettes are read and recorded (``REMOTELLM_E2E_CASSETTES`` elsewhere, e.g. to try
``record`` mode without touching the committed ones)."""
# Credentials never go into a cassette: the request side loses these headers before saving.
SCRUBBED_REQUEST_HEADERS = (
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "proxy-authorization",
)
_SCRUBBED_RESPONSE_HEADERS = frozenset({"set-cookie", "www-authenticate"})

Source = Literal["main", "embeddings", "tools", "wrong_key"]
"""Which server answers: the llama.cpp server (with an API key), its ``--embeddings`` twin,
the tool-calling upstream (the demo LLM locally: the tiny random model cannot call tools), or
the main server reached with a wrong key (for a genuine 401 body)."""

SYSTEM = "You are a terse assistant. Answer in one short sentence."
# ~3,000 words: more tokens than one llama.cpp slot holds (1,024), so the server refuses it.
TOO_LONG = " ".join(f"word{i % 97} relay broker connector" for i in range(800))
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


def _chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    return {"model": model, "messages": messages, **extra}


_USAGE = {"stream": True, "stream_options": {"include_usage": True}}


@dataclass(frozen=True)
class Recordable:
    """One request of the catalogue, recorded into ``cassettes/<name>.yaml``."""

    name: str
    method: str
    path: str
    body: Callable[[str], dict[str, Any]] | None
    source: Source = "main"


CATALOGUE: tuple[Recordable, ...] = (
    Recordable("models", "GET", "/v1/models", None),
    # llama.cpp's context length (n_ctx per slot): the connector reads it when it discovers.
    Recordable("props", "GET", "/props", None),
    Recordable(
        "chat",
        "POST",
        "/v1/chat/completions",
        lambda m: _chat(m, "Say hello to the relay.", max_tokens=24, seed=7),
    ),
    Recordable(
        "chat_stream",
        "POST",
        "/v1/chat/completions",
        lambda m: _chat(m, "Stream a greeting.", max_tokens=32, seed=8, **_USAGE),
    ),
    Recordable(
        "chat_stream_long",
        "POST",
        "/v1/chat/completions",
        # ignore_eos is llama.cpp's: exactly max_tokens tokens (other servers ignore it).
        lambda m: _chat(m, "Tell a long story.", max_tokens=300, seed=9, ignore_eos=True, **_USAGE),
    ),
    Recordable(
        "completion",
        "POST",
        "/v1/completions",
        lambda m: {"model": m, "prompt": "The relay says", "max_tokens": 16, "seed": 10},
    ),
    Recordable(
        "completion_stream",
        "POST",
        "/v1/completions",
        lambda m: {
            "model": m,
            "prompt": "Once upon a time",
            "max_tokens": 20,
            "seed": 11,
            **_USAGE,
        },
    ),
    Recordable(
        "embeddings",
        "POST",
        "/v1/embeddings",
        lambda m: {"model": m, "input": ["hello relay", "remotellm"], "encoding_format": "float"},
        source="embeddings",
    ),
    Recordable(
        "tool_calls",
        "POST",
        "/v1/chat/completions",
        lambda m: _chat(m, "Weather in Paris?", tools=[WEATHER_TOOL], max_tokens=12, seed=12),
        source="tools",
    ),
    Recordable(
        "tool_calls_stream",
        "POST",
        "/v1/chat/completions",
        lambda m: _chat(
            m, "Weather in Oslo?", tools=[WEATHER_TOOL], max_tokens=12, seed=13, **_USAGE
        ),
        source="tools",
    ),
    Recordable(
        "error_400_context",
        "POST",
        "/v1/chat/completions",
        lambda m: _chat(m, TOO_LONG, max_tokens=8, **_USAGE),
    ),
    Recordable(
        "error_401_upstream_key",
        "POST",
        "/v1/chat/completions",
        lambda m: _chat(m, "Who am I?", max_tokens=8, seed=401),
        source="wrong_key",
    ),
    Recordable(
        "error_501_embeddings",
        "POST",
        "/v1/embeddings",
        # The main server runs without --embeddings, so this is its genuine 5xx answer.
        lambda m: {"model": m, "input": "no embeddings on this server"},
    ),
)


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    headers = response.get("headers", {})
    for name in list(headers):
        if name.lower() in _SCRUBBED_RESPONSE_HEADERS:
            del headers[name]
    return response


def recorder() -> vcr.VCR:
    """A VCR that always records afresh and never stores a credential."""
    return vcr.VCR(
        serializer="yaml",
        cassette_library_dir=str(CASSETTE_DIR),
        record_mode="all",
        match_on=("method", "path", "body"),
        filter_headers=SCRUBBED_REQUEST_HEADERS,
        before_record_response=_scrub_response,
        decode_compressed_response=True,
    )


@dataclass(frozen=True)
class Interaction:
    """A recorded request and its response, as the replay server and the tests need them."""

    name: str
    method: str
    path: str
    request_body: bytes
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def request_json(self) -> Any:
        return json.loads(self.request_body) if self.request_body else None

    @property
    def content_type(self) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")

    @property
    def is_sse(self) -> bool:
        return self.content_type.startswith("text/event-stream")


def _as_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def load_interactions(directory: Path = CASSETTE_DIR) -> Iterator[Interaction]:
    """Every interaction of every cassette in ``directory``, named after its file."""
    for path in sorted(directory.glob("*.yaml")):
        requests, responses = FilesystemPersister.load_cassette(str(path), yamlserializer)
        for request, response in zip(requests, responses, strict=True):
            headers = {k: ", ".join(v) for k, v in response.get("headers", {}).items()}
            yield Interaction(
                name=path.stem,
                method=request.method,
                path=request.path,
                request_body=_as_bytes(request.body),
                status=int(response["status"]["code"]),
                headers=headers,
                body=_as_bytes(response["body"]["string"]),
            )
