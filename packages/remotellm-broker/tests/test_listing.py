"""``GET /v1/models`` is served from a body kept up to date when connectors change: a listing
never blocks the event loop, however many connectors and models there are (issue 11 item 2:
40 links x 9,000 models cost 0.9-2.4 s of loop time per listing before)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from broker_rig import Rig, running_broker, wait_for
from remotellm_broker.listing import ModelListing
from remotellm_broker.registry import Connector, Registry
from remotellm_protocol import ModelInfo

LINKS = 40
MODELS = 9000


class LoopLag:
    """The longest the event loop was blocked while it ran: a task that asks to wake every
    5 ms and records how late it woke."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, loop.time() - before - 0.005)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _fetch(rig: Rig) -> int:
    """One listing, its bytes only (parsing a megabyte of JSON here would block the loop
    this test measures, since the client shares it with the broker)."""
    async with rig.http.get(rig.url + "/v1/models", headers=rig.auth) as resp:
        assert resp.status == 200
        return len(await resp.read())


async def _list(rig: Rig) -> list[dict[str, object]]:
    async with rig.http.get(rig.url + "/v1/models", headers=rig.auth) as resp:
        assert resp.status == 200
        data: list[dict[str, object]] = (await resp.json())["data"]
        return data


@pytest.mark.slow
async def test_listing_40_links_of_9000_models_never_blocks_the_loop(tmp_path: Path) -> None:
    models = [f"org/model-{i:05d}" for i in range(MODELS)]
    async with running_broker(tmp_path, max_models_per_connector=MODELS) as rig:
        peers = [
            await rig.peer(name=f"gpu-{n}", models=models, context_length=4096 + n)
            for n in range(LINKS)
        ]
        await wait_for(lambda: len(rig.state.registry) == LINKS, within=60)
        first = await _list(rig)
        assert len(first) == MODELS
        assert first[0] == {
            "id": "org/model-00000",
            "object": "model",
            "created": rig.state.started_at,
            "owned_by": "tests",
            "available": True,
            "endpoints": ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"],
            "context_length": 4096,
            "max_model_len": 4096,
        }
        with LoopLag() as lag:
            started = time.perf_counter()
            for round_ in range(10):
                # A connector changes (its LLM went down) between listings, as in real life.
                peer = peers[round_]
                await peer.announce(models, available=round_ % 2 == 1)
                sizes = await asyncio.gather(*(_fetch(rig) for _ in range(4)))
                assert min(sizes) > MODELS * 100
            took = time.perf_counter() - started
        print(f"40 listings of {MODELS} models with 10 connector changes: {took:.2f} s, "
              f"worst loop lag {lag.worst * 1000:.0f} ms")  # fmt: skip
        # Before: 0.9-2.4 s of loop time per listing. Now a listing is a cached body; what
        # remains is decoding each 9,000-model frame and one rebuild per change (~40 ms).
        assert lag.worst < 0.5, f"the loop was blocked {lag.worst:.2f} s"
        assert len(await _list(rig)) == MODELS


def test_the_body_is_rebuilt_only_after_a_change_and_says_what_changed() -> None:
    reg: Registry[Connector] = Registry()
    a = Connector("a", "s", [ModelInfo(id=f"m{i}") for i in range(100)], 4)
    reg.add(a)
    listing = ModelListing(reg, created=7)
    body = listing.body()
    assert listing.body() is body  # nothing changed: the same bytes, nothing encoded
    reg.update_models(a, [ModelInfo(id="m0", context_length=8, available=False)])
    changed = listing.body()
    assert changed is not body
    assert changed == (
        b'{"object":"list","data":[{"id":"m0","object":"model","created":7,'
        b'"owned_by":"remotellm","available":false,'
        b'"endpoints":["/v1/chat/completions","/v1/completions","/v1/embeddings"],'
        b'"context_length":8,"max_model_len":8}]}'
    )
