"""Usage records end to end: a real broker and connector, real clients, the report commands.

- 1,000 requests from 20 users: the broker's report and the GPU owner's report count every
  request and every token exactly as the clients saw them;
- the broker killed with SIGKILL loses at most the records of its last flush interval, and the
  restarted broker appends to the same database.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.procs import BIN, broker_process, connector_process
from harness.stack import inprocess_broker, inprocess_connector
from harness.waits import wait_for, wait_for_async
from remotellm_connector.demo_llm import DemoLLMServer

USERS = 20
PER_USER = 50
FLUSH_S = 0.2
#: One flush interval plus the time the writer may need to commit on a loaded machine.
MARGIN_S = FLUSH_S + 2.0


def report(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [*args, "--format", "json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


async def one_request(
    http: aiohttp.ClientSession, url: str, key: str, n: int
) -> tuple[int, int, int]:
    """A chat request (every other one streamed, with usage); the status and the usage the
    client was told."""
    body: dict[str, Any] = {
        "model": "demo",
        "messages": [{"role": "user", "content": "x" * (n % 37)}],
        "max_tokens": 1 + n % 5,
    }
    if n % 2:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
        if not n % 2:
            usage = (await resp.json())["usage"]
            return resp.status, usage["prompt_tokens"], usage["completion_tokens"]
        usage = {}
        async for line in resp.content:
            if line.startswith(b"data: {") and b'"usage":{' in line:
                usage = json.loads(line[6:])["usage"]
        return resp.status, usage["prompt_tokens"], usage["completion_tokens"]


@pytest.mark.slow
async def test_a_thousand_requests_from_twenty_users_are_counted_exactly(
    tmp_path: Path, demo_llm: DemoLLMServer
) -> None:
    data_dir = tmp_path / "connector-data"
    async with inprocess_broker(tmp_path) as broker:
        keys = {f"user{i:02d}": broker.add_user(f"user{i:02d}") for i in range(USERS)}
        probe = broker.add_user("probe")  # waits for the model list; not one of the 20
        token = broker.connector_token()
        async with inprocess_connector(
            broker.relay_url, token, demo_llm.url, max_streams=64, data_dir=str(data_dir)
        ) as connector:
            seen: dict[str, list[int]] = {name: [0, 0, 0] for name in keys}
            gate = asyncio.Semaphore(40)
            async with aiohttp.ClientSession() as http:

                async def user(name: str, key: str, base: int) -> None:
                    for n in range(base, base + PER_USER):
                        async with gate:
                            status, prompt, completion = await one_request(http, broker.url, key, n)
                        assert status == 200
                        seen[name][0] += 1
                        seen[name][1] += prompt
                        seen[name][2] += completion

                await _wait_demo_listed(http, broker.url, probe)
                async with asyncio.TaskGroup() as tg:
                    for i, (name, key) in enumerate(keys.items()):
                        tg.create_task(user(name, key, i * PER_USER))
            await connector.stop()
        await broker.stop()

    users_file = Path(broker.settings.users_file)
    by_user = {
        r["user"]: r
        for r in report(
            str(BIN / "remotellm-broker"), "usage", "--users-file", str(users_file), "--by", "user"
        )
    }
    owner = {
        r["user"]: r
        for r in report(str(BIN / "remotellm-connector"), "usage", "--data-dir", str(data_dir))
    }
    assert sum(r["requests"] for u, r in by_user.items() if u != "local:probe") == 1000
    for name, (requests, prompt, completion) in seen.items():
        for side in (by_user, owner):
            row = side[f"local:{name}"]
            assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (
                requests,
                prompt,
                completion,
            ), name
            assert row["errors"] == 0
    by_model = report(
        str(BIN / "remotellm-broker"), "usage", "--users-file", str(users_file), "--by", "model"
    )
    assert {r["model"]: r["requests"] for r in by_model}["demo"] == USERS * PER_USER


async def _wait_demo_listed(http: aiohttp.ClientSession, url: str, key: str) -> None:
    async def listed() -> bool:
        async with http.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
            return resp.status == 200 and "demo" in await resp.text()

    await wait_for_async(listed, 15, what="the broker to list demo")


@pytest.mark.slow
async def test_a_killed_broker_loses_at_most_its_last_flush_interval(
    tmp_path: Path, demo_llm: DemoLLMServer
) -> None:
    env = {"REMOTELLM_BROKER_USAGE_FLUSH_INTERVAL_S": str(FLUSH_S)}
    db = tmp_path / "usage.db"
    async with broker_process(tmp_path, env=env) as broker:
        key = broker.add_user("alice")
        token = broker.connector_token("gpu")
        async with connector_process(broker.relay_url, token, demo_llm.url, tmp_path):
            finished: list[tuple[str, float]] = []
            sent: list[str] = []
            async with aiohttp.ClientSession() as http:
                await _wait_demo_listed(http, broker.url, key)

                async def traffic() -> None:
                    n = 0
                    while True:
                        rid = f"kill-{n:05d}"
                        sent.append(rid)
                        async with http.post(
                            broker.url + "/v1/chat/completions",
                            json={"model": "demo", "messages": [{"role": "user", "content": "h"}]},
                            headers={"Authorization": f"Bearer {key}", "X-Request-ID": rid},
                        ) as resp:
                            await resp.read()
                            assert resp.status == 200
                        finished.append((rid, time.time()))
                        n += 1

                task = asyncio.create_task(traffic())
                await wait_for(
                    lambda: len(finished) >= 30 and time.time() - finished[29][1] > MARGIN_S + 0.5,
                    60,
                    what="30 requests, and traffic for a while after them",
                )
                broker.proc.kill()  # SIGKILL: no drain, no final flush
                killed_at = time.time()
                task.cancel()
                with pytest.raises((asyncio.CancelledError, aiohttp.ClientError, AssertionError)):
                    await task
    stored = {r["request_id"] for r in _rows(db)}
    # Every request answered more than one flush interval (plus the time the writer needs
    # to commit on a loaded machine) before the kill is on disk.
    old_enough = [rid for rid, at in finished if at < killed_at - MARGIN_S]
    assert len(old_enough) >= 30
    missing = [rid for rid in old_enough if rid not in stored]
    assert missing == []
    assert stored <= set(sent)  # nothing invented, nothing twice (a set of request ids)

    # A broker started on the same files after the kill reads and appends to the database.
    async with broker_process(tmp_path, env=env) as broker:
        async with (
            connector_process(broker.relay_url, token, demo_llm.url, tmp_path),
            aiohttp.ClientSession() as http,
        ):
            await _wait_demo_listed(http, broker.url, key)
            async with http.post(
                broker.url + "/v1/chat/completions",
                json={"model": "demo", "messages": [{"role": "user", "content": "h"}]},
                headers={"Authorization": f"Bearer {key}", "X-Request-ID": "after-restart"},
            ) as resp:
                assert resp.status == 200
        broker.proc.signal()
        assert await broker.proc.wait(30) == 0
    after = {r["request_id"] for r in _rows(db)}
    assert after == stored | {"after-restart"}


def _rows(db: Path) -> list[dict[str, Any]]:
    import sqlite3

    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        sql = "SELECT * FROM usage WHERE endpoint = '/v1/chat/completions'"
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()
