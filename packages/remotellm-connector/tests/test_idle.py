"""An idle connector costs next to nothing: measured on the real process, not guessed.

``REMOTELLM_IDLE_SECONDS`` sets the window (default 10 s; the issue note used 30 s).
"""

import asyncio
import os
import sys
from pathlib import Path

import pytest

from broker_peer import TOKEN, BrokerPeer
from remotellm_connector.demo_llm import DemoLLMServer

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_idle_connector_uses_little_memory_and_cpu(
    peer: BrokerPeer, demo: DemoLLMServer
) -> None:
    window = float(os.environ.get("REMOTELLM_IDLE_SECONDS", "10"))
    env = {**os.environ, "REMOTELLM_CONNECTOR_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remotellm_connector", "run",
        "--broker-url", peer.url, "--llm-url", demo.url, "--health-port", "0",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        conn = await peer.next_connection(within=20)
        stream = await conn.open(body={"model": "demo", "messages": []})  # warm every code path
        await stream.wait_end()
        await asyncio.sleep(1)
        cpu_before = cpu_seconds(proc.pid)
        await asyncio.sleep(window)
        cpu = cpu_seconds(proc.pid) - cpu_before
        rss = rss_mib(proc.pid)
        assert not conn.closed.is_set()  # stayed connected (pings) the whole time
    finally:
        proc.terminate()
        await proc.wait()
    share = cpu / window
    print(f"\nidle connector over {window:g} s: RSS {rss:.1f} MiB, CPU {cpu:.2f} s ({share:.2%})")
    assert rss < 120
    assert cpu / window < 0.02
