"""From the raw figures to the Markdown table: medians, paired comparisons, targets.

Every comparison is *paired*: repetition r of a path against repetition r of direct (measured
minutes apart on the same machine), then the median over repetitions. Absolute figures on a
shared 2-core machine move 2x between repetitions; the pairs move much less.

- "+x" cells are added milliseconds (path - direct): TTFT, inter-token gap.
- "x0.85" cells are ratios (path / direct): tokens/s, bytes/s; 1.0 is "as fast as direct".
- Relay CPU per token is the broker's plus the connector's CPU time (or whatever processes a
  path puts in the middle) divided by the tokens the client received.
"""

from __future__ import annotations

import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.metrics import IDLE_METRICS, METRICS, Metric

__all__ = ["Row", "render", "rows"]

_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Row:
    workload: str
    metric: Metric
    values: dict[str, float | None]
    """Median value per path."""
    compared: dict[str, float | None]
    """Median paired delta or ratio against direct, per non-direct path."""
    met: bool | None
    """The target, judged on remotellm; None when there is no target or no figure."""


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _pair(m: Metric, value: float | None, base: float | None) -> float | None:
    if value is None or base is None:
        return None
    if m.compare == "delta":
        return value - base
    return value / base if base else None


def _judge(
    m: Metric, values: dict[str, float | None], compared: dict[str, float | None]
) -> bool | None:
    if m.target is None:
        return None
    op, limit = m.target
    judged = compared.get("remotellm") if m.compare else values.get("remotellm")
    return None if judged is None else _OPS[op](judged, limit)


def rows(raw: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for wl, by_path in raw["runs"].items():
        base_runs = by_path.get("direct", [])
        for m in METRICS.get(wl, ()):
            values, compared = {}, {}
            for path, runs in by_path.items():
                per_rep = [m.value(r) for r in runs]
                values[path] = _median(per_rep)
                if m.compare and path != "direct":
                    pairs = [
                        _pair(m, v, m.value(b)) for v, b in zip(per_rep, base_runs, strict=False)
                    ]
                    compared[path] = _median(pairs)
            out.append(Row(wl, m, values, compared, _judge(m, values, compared)))
    idle = raw.get("idle", {})
    if idle.get("before"):
        for m in IDLE_METRICS:
            values = {path: m.value({"before": idle["before"].get(path),
                                     "after": idle.get("after", {}).get(path)})
                      for path in idle["before"]}  # fmt: skip
            out.append(Row("W5", m, values, {}, _judge(m, values, {})))
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.3f}"


def _cell(row: Row, path: str) -> str:
    value = _fmt(row.values.get(path))
    if path == "direct" or not row.metric.compare:
        return value
    c = row.compared.get(path)
    if c is None:
        return value
    shown = f"{c:+.2f}" if row.metric.compare == "delta" else f"x{c:.2f}"
    return f"{value} ({shown})"


def render(raw: dict[str, Any]) -> str:
    table = rows(raw)
    paths = list(dict.fromkeys(p for r in table for p in r.values))
    meta = raw.get("meta", {})
    lines = [
        f"# remotellm bench {meta.get('stamp', '')}",
        "",
        f"{meta.get('reps')} interleaved repetition(s), quick={meta.get('quick')}, "
        f"Python {meta.get('python')}, {meta.get('cpus')} CPUs. Cells: median value "
        "(paired median vs direct: +added ms, or x ratio).",
        "",
        "| workload | metric | target (remotellm) | " + " | ".join(paths) + " | met |",
        "|---|---|---|" + "---|" * len(paths) + "---|",
    ]
    for r in table:
        target = "" if r.metric.target is None else f"{r.metric.target[0]} {r.metric.target[1]:g}"
        if target and r.metric.compare:
            target += " (+)" if r.metric.compare == "delta" else " (x)"
        met = {None: "", True: "met", False: "**MISSED**"}[r.met]
        cells = " | ".join(_cell(r, p) for p in paths)
        lines.append(f"| {r.workload} | {r.metric.label} | {target} | {cells} | {met} |")
    for name, why in raw.get("skipped", {}).items():
        lines.append(f"\n* {name} skipped: {why}")
    return "\n".join(lines) + "\n"
