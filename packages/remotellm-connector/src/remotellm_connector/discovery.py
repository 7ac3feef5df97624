"""Which LLM server is here, what it serves, and when that changes.

Autodetection tries the usual local ports in a fixed order (Ollama 11434, llama.cpp 8080,
vLLM 8000, LM Studio 1234) with ``GET /v1/models``; the first that answers with a model list
wins. The probes run at once, so a machine with nothing listening costs one short timeout.

Context lengths come from wherever the server tells them: vLLM's ``max_model_len`` in the model
list, llama.cpp's ``/props`` (``default_generation_settings.n_ctx``), Ollama's ``/api/show``
(``num_ctx`` if the model sets one, else ``<arch>.context_length``). They are cached per model
id, so the periodic re-read is one request on most servers.

The watcher keeps the list current and bumps ``version`` when it changes; the relay link waits
for that and sends a ``models`` frame. A server that is down is not a model that does not
exist: after two failed reads in a row the list is announced again with every model marked
unavailable, so the broker keeps the models known (clients get 503 with ``Retry-After``, not
404) but routes nothing here. While reads fail the server is probed every ``probe_interval``
seconds instead of ``interval``, and a request that finds the server unreachable ``poke``s the
watcher to check at once, so the models are marked down within a probe or two of the failure
and announced available again within about one probe interval of the server's return.
"""

import asyncio
import contextlib
import re
from collections.abc import Sequence
from typing import Any, Final

import aiohttp
import msgspec
import structlog

from remotellm_connector.capacity import llamacpp_slots
from remotellm_connector.endpoints import probe_endpoints
from remotellm_connector.upstream import Upstream
from remotellm_protocol import ModelInfo

__all__ = ["CANDIDATES", "LLMError", "ModelWatcher", "detect_llm", "list_models"]

log = structlog.get_logger("remotellm_connector.discovery")

#: (server, base URL) tried by autodetection, in order of preference.
CANDIDATES: Final = (
    ("Ollama", "http://127.0.0.1:11434"),
    ("llama.cpp", "http://127.0.0.1:8080"),
    ("vLLM", "http://127.0.0.1:8000"),
    ("LM Studio", "http://127.0.0.1:1234"),
)
PROBE_TIMEOUT_S: Final = 2.0
_NUM_CTX = re.compile(r"^num_ctx\s+(\d+)", re.MULTILINE)


class LLMError(Exception):
    """The LLM server could not list its models; the message says why, for ``check``."""

    def __init__(self, message: str, *, kind: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        #: "refused", "timeout", "status" (HTTP error, see ``status``), "invalid" or "error".
        self.kind = kind
        self.status = status


async def _get_json(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], wait_s: float
) -> Any:
    async with session.get(
        url, headers=headers, timeout=aiohttp.ClientTimeout(total=wait_s)
    ) as resp:
        if resp.status != 200:
            raise LLMError(
                f"GET {url} answered HTTP {resp.status}", kind="status", status=resp.status
            )
        return msgspec.json.decode(await resp.read())


async def _model_list(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str], wait_s: float
) -> list[dict[str, Any]]:
    url = base_url + "/v1/models"
    try:
        data = await _get_json(session, url, headers, wait_s)
    except LLMError:
        raise
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        why = "connection refused" if refused else exc.os_error.strerror or str(exc)
        raise LLMError(f"cannot connect to {base_url}: {why}", kind="refused") from None
    except TimeoutError:
        raise LLMError(
            f"{base_url} did not answer GET /v1/models in {wait_s:g} s", kind="timeout"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise LLMError(f"GET {url} failed: {exc}") from None
    except msgspec.DecodeError:
        raise LLMError(f"GET {url} did not return JSON", kind="invalid") from None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise LLMError(f"GET {url} did not return an OpenAI model list", kind="invalid")
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]


async def detect_llm(
    session: aiohttp.ClientSession,
    headers: dict[str, str],
    candidates: Sequence[tuple[str, str]] = CANDIDATES,
    wait_s: float = PROBE_TIMEOUT_S,
) -> tuple[str, str] | None:
    """The first ``(server, base URL)`` of ``candidates`` that lists models, or None."""

    async def probe(url: str) -> bool:
        try:
            await _model_list(session, url, headers, wait_s)
        except LLMError:
            return False
        return True

    answers = await asyncio.gather(*(probe(url) for _, url in candidates))
    return next((c for c, ok in zip(candidates, answers, strict=True) if ok), None)


async def list_models(
    session: aiohttp.ClientSession,
    base_url: str,
    headers: dict[str, str],
    cache: dict[str, int | None] | None = None,
    wait_s: float = PROBE_TIMEOUT_S * 2,
) -> list[ModelInfo]:
    """The models ``base_url`` serves, with context lengths where the server tells them."""
    cache = {} if cache is None else cache
    items = await _model_list(session, base_url, headers, wait_s)
    for item in items:
        length = item.get("max_model_len") or item.get("context_length")
        if isinstance(length, int):
            cache[item["id"]] = length
    unknown = [item["id"] for item in items if item["id"] not in cache]
    if unknown:
        n_ctx = await _llamacpp_n_ctx(session, base_url, headers, wait_s)
        for model in unknown:
            if n_ctx is not None:
                cache[model] = n_ctx
            else:
                cache[model] = await _ollama_context(session, base_url, headers, model, wait_s)
    return [
        ModelInfo(
            id=item["id"],
            owned_by=item["owned_by"] if isinstance(item.get("owned_by"), str) else None,
            context_length=cache.get(item["id"]),
        )
        for item in items
    ]


async def _llamacpp_n_ctx(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str], wait_s: float
) -> int | None:
    try:
        props = await _get_json(session, base_url + "/props", headers, wait_s)
        n_ctx = props["default_generation_settings"]["n_ctx"]
    except (LLMError, aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError):
        return None
    except (KeyError, TypeError):
        return None
    return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None


async def _ollama_context(
    session: aiohttp.ClientSession,
    base_url: str,
    headers: dict[str, str],
    model: str,
    wait_s: float,
) -> int | None:
    try:
        async with session.post(
            base_url + "/api/show",
            json={"model": model},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=wait_s),
        ) as resp:
            if resp.status != 200:
                return None
            show = msgspec.json.decode(await resp.read())
    except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError):
        return None
    if not isinstance(show, dict):
        return None
    params = show.get("parameters")
    if isinstance(params, str) and (m := _NUM_CTX.search(params)):
        return int(m.group(1))
    info = show.get("model_info")
    if isinstance(info, dict):
        for key, value in info.items():
            if key.endswith(".context_length") and isinstance(value, int):
                return value
    return None


class ModelWatcher:
    """Keeps ``models`` and ``reachable`` current; ``version`` counts announced changes."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        autodetect: bool,
        interval: float,
        probe_interval: float = 1.0,
        candidates: Sequence[tuple[str, str]] = CANDIDATES,
    ) -> None:
        self.upstream = upstream
        self.autodetect = autodetect
        self.candidates = candidates
        self.interval = interval
        self.probe_interval = probe_interval
        self.models: list[ModelInfo] = []
        self.model_ids: frozenset[str] = frozenset()
        self.reachable = False
        self.server: str | None = None
        #: llama.cpp's slot count (``capacity``), read when the server becomes reachable.
        self.slots: int | None = None
        self.version = 0
        self.error: str | None = None
        self._failures = 0
        self._cache: dict[str, int | None] = {}
        self._changed = asyncio.Event()
        self._poked = asyncio.Event()

    async def refresh(self) -> None:
        """Read the model list once (finding the server first when autodetecting)."""
        if self.upstream.base_url is None or (self.autodetect and not self.reachable):
            found = await detect_llm(
                self.upstream.session, self.upstream.auth_headers(), self.candidates
            )
            if found is not None and found[1] != self.upstream.base_url:
                self.server, self.upstream.base_url = found
                self._cache.clear()
                log.info("llm_found", server=found[0], url=found[1])
        if self.upstream.base_url is None:
            self._failed("no LLM server answers on 11434, 8080, 8000 or 1234")
            return
        try:
            models = await list_models(
                self.upstream.session,
                self.upstream.base_url,
                self.upstream.auth_headers(),
                self._cache,
            )
        except LLMError as exc:
            self._failed(str(exc))
            return
        # What the server answers besides chat completions (Responses, Messages), re-probed
        # with every refresh so an upgraded or swapped server is announced as it is now.
        endpoints = await probe_endpoints(
            self.upstream.session,
            self.upstream.base_url,
            self.upstream.auth_headers(),
            PROBE_TIMEOUT_S,
        )
        models = [msgspec.structs.replace(m, endpoints=endpoints) for m in models]
        if not self.reachable:
            log.info("llm_reachable", url=self.upstream.base_url, models=len(models))
            self.slots = await llamacpp_slots(
                self.upstream.session, self.upstream.base_url, self.upstream.auth_headers()
            )
        self.reachable, self.error, self._failures = True, None, 0
        self._set(models)

    def _failed(self, why: str) -> None:
        if self.reachable or self._failures == 0:
            log.warning("llm_unreachable", error=why)
        self.reachable, self.error = False, why
        self._failures += 1
        self._cache.clear()
        if self._failures >= 2:
            self._set([msgspec.structs.replace(m, available=False) for m in self.models])

    def poke(self) -> None:
        """A request found the LLM server unreachable: read the list now, not at the next
        interval."""
        self._poked.set()

    async def wait_next(self) -> None:
        """Sleep until the next read is due: ``interval`` while the server answers,
        ``probe_interval`` while it does not, at once when poked."""
        delay = self.probe_interval if self._failures else self.interval
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._poked.wait()
        self._poked.clear()

    def _set(self, models: list[ModelInfo]) -> None:
        if models != self.models:
            self.models = models
            self.model_ids = frozenset(m.id for m in models)
            self.version += 1
            self._changed.set()

    async def wait_changed(self, seen: int) -> int:
        """Return the current version once it differs from ``seen``."""
        while self.version == seen:
            self._changed.clear()
            await self._changed.wait()
        return self.version
