"""From the raw figures to the Markdown table: medians, paired comparisons, targets.

Every comparison is *paired*: repetition r of a path against repetition r of direct (measured
minutes apart on the same machine), then the median over repetitions. Absolute figures on a
shared 2-core machine move 2x between repetitions; the pairs move much less.

- "+x" cells are added milliseconds (path - direct): TTFT, inter-token gap.
- "x0.85" cells are ratios (path / direct): tokens/s, bytes/s; 1.0 is "as fast as direct".
- Relay CPU per token is the broker's plus the connector's CPU time (or whatever processes a
  path puts in the middle) divided by the tokens the client received.
- On the rows the issue compares (``Metric.peers``), "best peer" is the best figure among the
  peers (every path that is neither direct nor a remotellm variant: thin relays, ssh -R,
  LiteLLM), judged like the target (the paired figure where there is one), and "ahead" says
  whether remotellm's figure is at least as good.
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
    best_peer: tuple[str, float] | None = None
    """The peer with the best judged figure on a ``peers`` row, and that figure."""
    ahead: bool | None = None
    """remotellm's judged figure at least as good as the best peer's; None without both."""


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


def is_peer(path: str) -> bool:
    return path != "direct" and not path.startswith("remotellm")


def _against_peers(
    m: Metric, values: dict[str, float | None], compared: dict[str, float | None]
) -> tuple[tuple[str, float] | None, bool | None]:
    if not m.peers:
        return None, None
    judged = compared if m.compare else values
    figures = [(p, v) for p, v in judged.items() if is_peer(p) and v is not None]
    if not figures:
        return None, None
    pick = max if m.higher_better else min
    best = pick(figures, key=lambda pv: pv[1])
    ours = judged.get("remotellm")
    if ours is None:
        return best, None
    return best, ours >= best[1] if m.higher_better else ours <= best[1]


def _row(
    wl: str, m: Metric, values: dict[str, float | None], compared: dict[str, float | None]
) -> Row:
    best, ahead = _against_peers(m, values, compared)
    return Row(wl, m, values, compared, _judge(m, values, compared), best, ahead)


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
            out.append(_row(wl, m, values, compared))
    idle = raw.get("idle", {})
    if idle.get("before"):
        for m in IDLE_METRICS:
            values = {path: m.value({"before": idle["before"].get(path),
                                     "after": idle.get("after", {}).get(path)})
                      for path in idle["before"]}  # fmt: skip
            out.append(_row("W5", m, values, {}))
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


def _judged(row: Row, figure: float) -> str:
    if row.metric.compare == "delta":
        return f"{figure:+.2f}"
    if row.metric.compare == "ratio":
        return f"x{figure:.2f}"
    return _fmt(figure)


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
        "| workload | metric | target (remotellm) | "
        + " | ".join(paths)
        + " | met | best peer | remotellm ahead |",
        "|---|---|---|" + "---|" * len(paths) + "---|---|---|",
    ]
    for r in table:
        target = "" if r.metric.target is None else f"{r.metric.target[0]} {r.metric.target[1]:g}"
        if target and r.metric.compare:
            target += " (+)" if r.metric.compare == "delta" else " (x)"
        met = {None: "", True: "met", False: "**MISSED**"}[r.met]
        cells = " | ".join(_cell(r, p) for p in paths)
        peer = "" if r.best_peer is None else f"{r.best_peer[0]} {_judged(r, r.best_peer[1])}"
        ahead = {None: "", True: "yes", False: "**no**"}[r.ahead]
        lines.append(
            f"| {r.workload} | {r.metric.label} | {target} | {cells} | {met} | {peer} | {ahead} |"
        )
    for name, why in raw.get("skipped", {}).items():
        lines.append(f"\n* {name} skipped: {why}")
    return "\n".join(lines) + "\n"
