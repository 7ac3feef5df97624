"""The suite cannot rot: small W1/W3/W6 shapes on direct, remotellm and the standard peers
(thin relays, one and two hops; ``ssh -R`` through a throwaway sshd), real processes.

Asserts only what is not timing: every stream exact (its own tokens, in order, ``[DONE]``),
zero failures, and that the report renders from what was measured, peers set against
remotellm. Runs in the default test env (no psutil) in about 30 s:
``pytest -c bench/pytest.ini bench``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.loadgen import Group, Target, run_blocking
from bench.others import STANDARD_PATHS
from bench.paths import Rig
from bench.report import render, rows

#: Starting five paths and measuring them all happens in the first test's fixtures.
pytestmark = pytest.mark.timeout(300)

SHAPES = {
    "W1": (Group(concurrency=1, requests=8, tokens=50),),
    "W3": (Group(concurrency=40, requests=40, tokens=20, gap_ms=10),),
    "W6": (
        Group(name="big", concurrency=2, requests=4, prompt_bytes=256_000, response_bytes=300_000),
        Group(name="ordinary", concurrency=5, background=True, tokens=10, gap_ms=5),
    ),
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with Rig(Path(tmp_path_factory.mktemp("bench"))) as rig:
        rig.start_upstream()
        for name in STANDARD_PATHS:
            rig.add(name)
        assert not rig.skipped, rig.skipped  # sshd: scripts/ensure-system-deps.sh installs it
        yield rig


@pytest.fixture(scope="module")
def measured(rig: Rig) -> dict[str, dict[str, list[dict[str, Any]]]]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for n, (workload, groups) in enumerate(SHAPES.items()):
        for k, (name, path) in enumerate(rig.paths.items()):
            rig.reset_upstream_stats()
            target = Target(url=path.url, key=path.key)
            result = run_blocking(target, list(groups), seed_base=(n * 10 + k) * 10**9)
            upstream = rig.upstream_stats()
            runs.setdefault(workload, {})[name] = [
                {"loadgen": result, "procs": {}, "upstream": upstream, "rep": 0}
            ]
    return runs


@pytest.mark.parametrize("workload", list(SHAPES))
@pytest.mark.parametrize("path", ["direct", *STANDARD_PATHS])
def test_every_stream_gets_exactly_its_own_tokens(
    measured: dict[str, dict[str, list[dict[str, Any]]]], workload: str, path: str
) -> None:
    result = measured[workload][path][0]["loadgen"]
    for name, group in result["groups"].items():
        assert group["failures"] == 0, (name, group["failure_reasons"])
        assert group["ok"] == group["requests"] > 0
        assert group["tokens"] > 0


def test_the_report_renders_every_workload_and_path(
    measured: dict[str, dict[str, list[dict[str, Any]]]],
) -> None:
    table = render({"meta": {"reps": 1}, "runs": measured, "idle": {}})
    for workload in SHAPES:
        assert f"| {workload} |" in table
    assert "| direct | remotellm | relay-1hop | relay-2hop | ssh | met | best peer |" in table
    compared = [r for r in rows({"runs": measured}) if r.metric.peers and r.best_peer]
    assert {r.metric.label for r in compared} >= {"TTFT p50 (ms)", "tokens/s", "big bodies bytes/s"}
    for row in compared:
        assert row.best_peer is not None
        assert row.best_peer[0] in {"relay-1hop", "relay-2hop", "ssh"}
        assert row.ahead is not None
