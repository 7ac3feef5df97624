"""How many streams the connector takes at once when the owner does not say (``max_streams``).

The cap is where requests stop being sent to the LLM server and start waiting at the broker,
in its fair queue (per-user round robin, bounded, with a timeout). Too low and it throttles a
server that could batch far more (a fixed 16 did); too high and requests pile up in the
server's own first-come-first-served queue, where one user's burst waits ahead of everyone.

- An explicit ``--max-streams`` / ``REMOTELLM_CONNECTOR_MAX_STREAMS`` / YAML value always wins.
- llama.cpp says how many sequences it decodes at once: ``GET /props`` → ``total_slots``
  (``--parallel``). The cap is **2 x slots**: every slot busy plus one request waiting per
  slot, so a slot that frees up starts its next prompt at once instead of after a round trip
  through the broker, while everything beyond that waits in the broker's fair queue.
- Other servers do not say. vLLM's batch size (``max_num_seqs``) is not in ``/v1/models`` nor
  in ``/metrics`` (``vllm:cache_config_info`` has the KV-cache blocks, not the batch size);
  Ollama's ``OLLAMA_NUM_PARALLEL`` is not visible over HTTP at all. The cap is then
  **256** (``FALLBACK_MAX_STREAMS``): vLLM's default ``max_num_seqs`` on most GPUs, so its
  batch can fill,
  and half of Ollama's default ``OLLAMA_MAX_QUEUE`` (512), so Ollama queues the overflow
  itself instead of answering 503. Beyond 256 the broker's fair queue does the waiting. An
  open stream costs the connector about 27 KiB, so 256 of them fit in about 7 MB.

The slot count is read when the LLM becomes reachable (``ModelWatcher``) and applied on each
relay connection (the broker learns the cap in ``hello``).
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp
import msgspec

__all__ = ["FALLBACK_MAX_STREAMS", "MAX_STREAMS_LIMIT", "llamacpp_slots", "stream_cap"]

FALLBACK_MAX_STREAMS: Final = 256
#: The highest cap a setting may ask for (``config``); also the connection pool's ceiling.
MAX_STREAMS_LIMIT: Final = 10_000
PROBE_TIMEOUT_S: Final = 2.0


async def llamacpp_slots(
    session: aiohttp.ClientSession,
    base_url: str,
    headers: dict[str, str],
    wait_s: float = PROBE_TIMEOUT_S,
) -> int | None:
    """llama.cpp's ``total_slots`` from ``GET /props``; None from any other server or answer."""
    try:
        async with session.get(
            base_url + "/props", headers=headers, timeout=aiohttp.ClientTimeout(total=wait_s)
        ) as resp:
            if resp.status != 200:
                return None
            props: Any = msgspec.json.decode(await resp.read())
    except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError):
        return None
    slots = props.get("total_slots") if isinstance(props, dict) else None
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        return None
    return slots


def stream_cap(explicit: int | None, slots: int | None) -> tuple[int, str]:
    """The cap and where it came from (for the start-up log and ``/status``)."""
    if explicit is not None:
        return explicit, "max_streams setting"
    if slots is not None:
        return min(2 * slots, MAX_STREAMS_LIMIT), f"2 x the LLM server's {slots} slots"
    return FALLBACK_MAX_STREAMS, "default: the LLM server does not report its slots"
