"""The aiohttp application, and the two ways to run it (in-process and as a long-running server).

Run it with ``serve_demo_llm`` or ``run_demo_llm`` rather than a bare ``AppRunner``: they turn
on ``handler_cancellation`` (so a client disconnect reaches the handler at once, even in a long
time-to-first-token sleep), switch the access log off (no per-request work on the benchmark's
baseline) and use a deep listen backlog (1000 clients connecting at once must not wait for SYN
retries).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import msgspec
from aiohttp import web

from remotellm_connector.demo_llm import handlers
from remotellm_connector.demo_llm.config import DEMO_CONFIG, DEMO_STATS, DemoLLMConfig, DemoStats
from remotellm_connector.demo_llm.errors import ApiError

__all__ = ["DemoLLMServer", "make_app", "run_demo_llm", "serve_demo_llm"]

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Request bodies up to this size: the benchmark sends 4 MiB prompts (aiohttp's default: 1 MiB)."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPEN_PATHS = frozenset({"/health", "/_demo/stats", "/_demo/stats/reset"})


def make_app(config: DemoLLMConfig | None = None) -> web.Application:
    """The fake OpenAI-compatible server; ``app[DEMO_STATS]`` holds what it saw."""
    config = config or DemoLLMConfig()
    app = web.Application(middlewares=[_openai_middleware], client_max_size=MAX_BODY_BYTES)
    app[DEMO_CONFIG] = config
    app[DEMO_STATS] = DemoStats()
    created = int(time.time())
    models = [_model_object(config, model_id, created) for model_id in config.models]
    listing = msgspec.json.encode({"object": "list", "data": models})
    by_id = {m["id"]: msgspec.json.encode(m) for m in models}

    async def list_models(request: web.Request) -> web.Response:
        return web.Response(body=listing, content_type="application/json")

    async def get_model(request: web.Request) -> web.Response:
        model_id = request.match_info["model"]
        if model_id not in by_id:
            raise ApiError(
                404,
                f"The model `{model_id}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return web.Response(body=by_id[model_id], content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_post("/v1/completions", handlers.completions)
    app.router.add_post("/v1/embeddings", handlers.embeddings)
    app.router.add_post("/v1/responses", handlers.responses)
    app.router.add_post("/v1/messages", handlers.messages)
    app.router.add_post("/v1/messages/count_tokens", handlers.count_tokens)
    app.router.add_get("/health", health)
    app.router.add_get("/_demo/stats", handlers.stats)
    app.router.add_post("/_demo/stats/reset", handlers.stats_reset)
    return app


def _model_object(config: DemoLLMConfig, model_id: str, created: int) -> dict[str, object]:
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": config.owned_by,
        "root": model_id,
        "parent": None,
        "max_model_len": config.max_model_len,
    }


@web.middleware
async def _openai_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Count the request, check the key, and give every refusal OpenAI's error shape (Anthropic's
    on the Messages routes)."""
    resource = request.match_info.route.resource
    request.app[DEMO_STATS].request_seen(request.path if resource is None else resource.canonical)
    anthropic = request.path.startswith("/v1/messages")
    try:
        if request.path not in _OPEN_PATHS:
            _check_key(request, request.app[DEMO_CONFIG].api_key)
        return await handler(request)
    except ApiError as err:
        return err.response(anthropic=anthropic)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = (
            f"Invalid URL ({request.method} {request.path})"
            if exc.status in (404, 405)
            else exc.reason
        )
        return ApiError(exc.status, message).response(anthropic=anthropic)


def _check_key(request: web.Request, expected: str | None) -> None:
    if expected is None:
        return
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer":
        token = request.headers.get("api-key", "") or request.headers.get("x-api-key", "")
    if not token:
        raise ApiError(401, "You didn't provide an API key.", code="invalid_api_key")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")


@dataclass(frozen=True)
class DemoLLMServer:
    """A running demo LLM: where it listens and what it saw."""

    app: web.Application
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. for ``AsyncOpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    @property
    def stats(self) -> DemoStats:
        return self.app[DEMO_STATS]


@asynccontextmanager
async def serve_demo_llm(
    config: DemoLLMConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[DemoLLMServer]:
    """Serve on ``host:port`` (0: an ephemeral port) for the ``async with`` block."""
    app = make_app(config)
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield DemoLLMServer(app, str(bound_host), int(bound_port))
    finally:
        await runner.cleanup()


async def run_demo_llm(
    host: str,
    port: int,
    config: DemoLLMConfig | None = None,
    *,
    on_ready: Callable[[DemoLLMServer], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set or the task is cancelled (Ctrl-C, SIGTERM via the CLI)."""
    async with serve_demo_llm(config, host=host, port=port) as server:
        if on_ready is not None:
            on_ready(server)
        await (stop or asyncio.Event()).wait()
