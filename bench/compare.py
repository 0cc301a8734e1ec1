"""``python -m bench compare OLD.json NEW.json``: every figure's ratio, new ÷ old.

So a change's cost is checked before it lands: run the bench on the commit
before the change and on the change (same machine, close in time), then
compare the two JSON files. Figures are matched by workload and worker label
(and by load for latency-curve points, by point for ``bench.curves`` files,
by process count for ``bench.processes`` files); a figure present in only one
file is listed as such.

Each ratio is marked ``better`` or ``worse`` when it moves more than
``--tolerance`` (default 5%) in that figure's good or bad direction:
throughput and floors up is better, everything else (CPU per task, RSS,
latency, errors) down is better. ``--fail-on-worse`` exits 1 when any figure
got worse, for a script or CI step.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Figures where a higher value is better; every other figure is better lower.
HIGHER_IS_BETTER = ("throughput", "floor:", "sent_rate")

#: A bench run's per-row figures, in the order they are printed.
ROW_FIGURES = ("throughput", "cpu_ms_per_task", "peak_rss_mb", "latency_p50_ms",
               "latency_p95_ms", "latency_p99_ms", "errors")
CURVE_FIGURES = ("p50_ms", "p95_ms", "p99_ms", "worst_second_p99_ms")

Key = tuple[str, str, str]  # (workload, worker, figure)


def figures(data: dict[str, Any]) -> dict[Key, float]:
    """Every comparable figure of a bench JSON file (``python -m bench``,
    ``bench.curves`` or ``bench.processes``), keyed by (workload, worker, figure)."""
    out: dict[Key, float] = {}

    def put(key: Key, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)

    for row in data.get("results", []):
        workload, worker = row["workload"], row["config"]
        for name in ROW_FIGURES:
            put((workload, worker, name), row.get(name))
        put((workload, worker, "latency worst 1 s p99"),
            row.get("latency_point", {}).get("worst_second_p99_ms"))
        for point in row.get("latency_curve", []):
            load = f"{point['fraction'] * 100:.0f}%"
            for name in CURVE_FIGURES:
                put((workload, worker, f"{name} at {load}"), point.get(name))
    for point in data.get("points", []):  # bench.curves
        for name, value in point.items():
            if name not in ("workload", "worker", "notes"):
                put((point["workload"], point["worker"], name), value)
    for processes, medians in data.get("medians", {}).items():  # bench.processes
        for name, value in medians.items():
            put(("noop", f"--processes {processes}", name), value)
    for name, value in data.get("floors", {}).items():
        put(("floors", "", f"floor:{name}"), value)
    return out


def higher_is_better(figure: str) -> bool:
    """Whether a rise of ``figure`` is an improvement."""
    return figure.startswith(HIGHER_IS_BETTER)


@dataclass(frozen=True)
class Line:
    """One figure in both files (or in one)."""

    key: Key
    old: float | None
    new: float | None

    @property
    def ratio(self) -> float | None:
        """new ÷ old; inf when only new is non-zero, None when either is missing."""
        if self.old is None or self.new is None:
            return None
        if self.old == 0:
            return 1.0 if self.new == 0 else math.inf
        return self.new / self.old

    def verdict(self, tolerance: float) -> str:
        """``better``, ``worse`` or ``""`` (within ``tolerance``, or not comparable)."""
        ratio = self.ratio
        if ratio is None or abs(ratio - 1) <= tolerance:
            return ""
        up = ratio > 1
        return "better" if up == higher_is_better(self.key[2]) else "worse"


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[Line]:
    """Every figure of either file, in the new file's order, then the old file's leftovers."""
    a, b = figures(old), figures(new)
    keys = list(dict.fromkeys([*b, *a]))
    return [Line(k, a.get(k), b.get(k)) for k in keys]


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def render(lines: list[Line], tolerance: float, old_name: str, new_name: str) -> str:
    """The figures in both files as a markdown table; then the rows found in only one."""
    out = [f"new = {new_name}, old = {old_name}; marked when the ratio moves more than "
           f"{tolerance:.0%}", "",
           "| Workload | Worker | Figure | Old | New | New ÷ old | |",
           "|---|---|---|---:|---:|---:|---|"]
    both = [line for line in lines if line.ratio is not None]
    for line in both:
        ratio = line.ratio
        cell = "∞" if ratio == math.inf else f"{ratio:.2f}×"
        workload, worker, figure = line.key
        out.append(f"| {workload} | {worker} | {figure} | {_num(line.old)} | {_num(line.new)} "
                   f"| {cell} | {line.verdict(tolerance)} |")
    verdicts = [line.verdict(tolerance) for line in both]
    out += ["", f"{verdicts.count('better')} better, {verdicts.count('worse')} worse, "
            f"{verdicts.count('')} within {tolerance:.0%}."]
    rows = {side: {line.key[:2] for line in lines if getattr(line, side) is not None}
            for side in ("old", "new")}
    for side, other in (("old", "new"), ("new", "old")):
        only = [" / ".join(filter(None, key)) for key in dict.fromkeys(
            line.key[:2] for line in lines) if key in rows[side] and key not in rows[other]]
        if only:
            out.append(f"Only in {side}: {'; '.join(only)}.")
    return "\n".join([*out, ""])


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="relative change left unmarked (default 0.05)")
    parser.add_argument("--fail-on-worse", action="store_true",
                        help="exit 1 when any figure got worse by more than the tolerance")
    args = parser.parse_args(argv)
    lines = compare(json.loads(args.old.read_text()), json.loads(args.new.read_text()))
    print(render(lines, args.tolerance, str(args.old), str(args.new)))
    if not any(line.ratio is not None for line in lines):
        print("no figure is in both files", file=sys.stderr)
        return 2
    worse = any(line.verdict(args.tolerance) == "worse" for line in lines)
    return 1 if worse and args.fail_on_worse else 0
