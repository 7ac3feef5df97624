"""Where the "recorded upstream" tests get their LLM from: replay, record or live.

``REMOTELLM_E2E_MODE``:

- ``replay`` (default): the cassettes in ``tests-e2e/cassettes`` are served by a local
  replay server; nothing else is needed and every byte is known in advance.
- ``record``: the cassettes are recorded again before the tests run, from
  ``REMOTELLM_E2E_LLM_URL`` if set, else from the local llama.cpp server; then replayed.
- ``live``: the connector talks to ``REMOTELLM_E2E_LLM_URL`` itself; tests check shapes, not
  bytes (a real model does not answer the same way twice).

``REMOTELLM_E2E_LLM_API_KEY`` (and the URL) may live in ``tests-e2e/.env.test`` or the
repository's ``.env.test``; both are git-ignored, so a key never lands in a commit. Values
already in the environment win over the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["E2E_ROOT", "Mode", "UpstreamChoice", "load_env_file", "upstream_choice"]

E2E_ROOT = Path(__file__).resolve().parent.parent
Mode = Literal["replay", "record", "live"]
_MODES: tuple[Mode, ...] = ("replay", "record", "live")
_ENV_FILES = (E2E_ROOT / ".env.test", E2E_ROOT.parent / ".env.test")


def load_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (``#`` comments, optional quotes, optional ``export``)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class UpstreamChoice:
    mode: Mode
    llm_url: str | None
    """The real endpoint for ``record``/``live``; None: the local llama.cpp server."""
    api_key: str | None
    model: str | None
    """``REMOTELLM_E2E_LLM_MODEL``; None: the first id the endpoint lists."""


def upstream_choice(environ: Mapping[str, str] | None = None) -> UpstreamChoice:
    env: dict[str, str] = {}
    for path in reversed(_ENV_FILES):
        env.update(load_env_file(path))
    env.update(os.environ if environ is None else environ)
    given = env.get("REMOTELLM_E2E_MODE", "replay").strip().lower() or "replay"
    mode = next((m for m in _MODES if m == given), None)
    if mode is None:
        raise ValueError(f"REMOTELLM_E2E_MODE={given!r}: expected one of {', '.join(_MODES)}")
    url = env.get("REMOTELLM_E2E_LLM_URL") or None
    if mode == "live" and url is None:
        raise ValueError("REMOTELLM_E2E_MODE=live needs REMOTELLM_E2E_LLM_URL (or .env.test)")
    return UpstreamChoice(
        mode=mode,
        llm_url=url.rstrip("/").removesuffix("/v1") if url else None,
        api_key=env.get("REMOTELLM_E2E_LLM_API_KEY") or None,
        model=env.get("REMOTELLM_E2E_LLM_MODEL") or None,
    )
