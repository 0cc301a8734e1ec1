"""Scaling curves: what one worker does as its concurrency grows, and 1 → N processes.

    python -m bench.curves sleep                  # sleep 100 ms at -c 100, 1,000, 5,000, 10,000
    python -m bench.curves sleep --concurrency 100,1000 --scale 0.3
    python -m bench.curves processes              # chart bench/results/processes.json

``sleep`` runs the bench's throughput phase (queue pre-filled by a real Celery
client, tasks/s between the 10th and 90th percentile of ``date_done``, see
:mod:`bench.run`) once per concurrency, and reads over the same window the CPU
of the worker's process tree, of RabbitMQ (the process listening on the
broker's port, with its children) and of PostgreSQL (the postmaster and its
backends), as cores (CPU seconds ÷ wall seconds), with the worker's peak RSS.
On a 2-core machine the broker and the database compete with the worker, so
their share shows where the limit is. Output: ``curves-sleep.{json,md,png}``.

``processes`` charts the file written by :mod:`bench.processes` (1 and 2
worker processes on one queue, with RabbitMQ's and PostgreSQL's CPU), which
it does not re-measure: ``processes.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .measure import TreeSampler, machine, wait_until

CONCURRENCIES = (100, 1000, 5000, 10000)


@dataclass
class Point:
    """One concurrency's figures."""

    workload: str
    worker: str
    concurrency: int
    tasks: int = 0
    done: int = 0
    throughput: float = 0.0
    littles_law_ideal: float = 0.0
    worker_cores: float = 0.0
    worker_cpu_ms_per_task: float = 0.0
    rabbitmq_cores: float = 0.0
    postgres_cores: float = 0.0
    idle_cores: float = 0.0
    peak_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


def sweep(concurrencies: list[int], scale: float, log_path: Path) -> list[Point]:
    """The throughput phase of ``bench.sleep`` at each concurrency, with the services' CPU."""
    from .processes import listener
    from .run import BROKER, DSN, Bench

    bench = Bench(quick=False, scale=scale, progress=False, log_path=log_path)
    services = (listener(urlsplit(BROKER).port or 5672), listener(urlsplit(DSN).port or 5432))
    points = []
    for c in concurrencies:
        points.append(point := sleep_point(bench, c, 12.0 * scale, services))
        print(f"[curves] {asdict(point)}", file=sys.stderr)
    return points


def sleep_point(bench: Any, c: int, budget: float, services: tuple[Any, Any]) -> Point:
    """One run of ``bench.sleep`` at concurrency ``c``."""
    from .processes import MachineCpu
    from .run import Config, Result, Workload, steady_rate

    workload = Workload("sleep", "bench.sleep", 0.1, c, budget)
    config = Config(f"asyncworker -c {c}", "asyncworker", c)
    point = Point("sleep", "asyncworker", c, littles_law_ideal=c / 0.1)
    # Enough for the budget at the ideal rate, at most what one core can run in it.
    point.tasks = max(10, min(int(point.littles_law_ideal * budget * 1.3),
                              int(6000 * budget), 40000))
    print(f"[curves] sleep -c {c}: {point.tasks} tasks", file=sys.stderr)
    bench._reset()
    bench._publish(workload, point.tasks)
    result = Result(config.label, config.kind, workload.name, c)
    with bench._worker(config, workload, result) as (process, sampler):
        samplers = [sampler, *(TreeSampler(p.pid, 0.5).start() for p in services)]
        try:
            if not wait_until(lambda: bench._done() > 0 or process.poll() is not None, 120):
                raise RuntimeError(f"-c {c}: the worker produced no result")
            before = [s.cpu_seconds() for s in samplers]
            cpu, started = MachineCpu(), time.monotonic()
            wait_until(lambda: bench._done() >= point.tasks or process.poll() is not None
                       or time.monotonic() - started > budget, 600, 0.2)
            seconds = time.monotonic() - started
            used = [s.cpu_seconds() - b for s, b in zip(samplers, before, strict=True)]
            _, idle = cpu.since()
            # Read before the worker stops: rows written while it drains are no part of it.
            done_at = [row[0] for row in bench._sql(
                "SELECT date_done FROM celery_taskmeta ORDER BY date_done")]
        finally:
            for other in samplers[1:]:
                other.stop()
    point.done = len(done_at)
    point.throughput = round(steady_rate(done_at), 1)
    point.worker_cores, point.rabbitmq_cores, point.postgres_cores = (
        round(u / seconds, 3) for u in used)
    point.worker_cpu_ms_per_task = round(used[0] * 1000 / max(point.done, 1), 3)
    point.idle_cores = round(idle / seconds, 3)
    point.peak_rss_mb = result.peak_rss_mb
    if point.done < point.tasks:
        point.notes.append(f"time budget ended with {point.tasks - point.done} "
                           f"of {point.tasks} tasks left")
    return point


def sleep_markdown(data: dict[str, Any]) -> str:
    """The sweep's table."""
    m = data["machine"]
    lines = [
        "# sleep 100 ms: throughput, CPU and memory against concurrency", "",
        f"`{data['command']}` at {data['when']}: {m['cores']} cores ({m['cpu']}), Python "
        f"{m['python']}, PostgreSQL {m['postgresql']} (fsync={m['postgresql_fsync']}); "
        "RabbitMQ and PostgreSQL shared with other users of the machine.", "",
        "Queue pre-filled; tasks/s between the 10th and 90th percentile of `date_done`; "
        "CPU as cores (CPU seconds ÷ wall seconds) from the first result to the last (or "
        "the time budget); peak RSS of the worker's process tree.", "",
        "| Concurrency | Tasks/s | Little's-law ideal | Worker cores | Worker CPU ms/task "
        "| RabbitMQ cores | PostgreSQL cores | Idle cores | Peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in data["points"]:
        lines.append(
            f"| {p['concurrency']:,} | {p['throughput']:,.0f} | {p['littles_law_ideal']:,.0f} "
            f"| {p['worker_cores']:.2f} | {p['worker_cpu_ms_per_task']:.3f} "
            f"| {p['rabbitmq_cores']:.2f} | {p['postgres_cores']:.2f} | {p['idle_cores']:.2f} "
            f"| {p['peak_rss_mb']:,.0f} |")
    lines += [f"- -c {p['concurrency']}: {n}" for p in data["points"] for n in p["notes"]]
    return "\n".join([*lines, ""])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sleep_chart(points: list[dict[str, Any]], path: Path) -> None:
    """Throughput against the ideal; where the cores go; peak RSS; all per concurrency."""
    plt = _pyplot()
    xs = [p["concurrency"] for p in points]
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    left.plot(xs, [p["throughput"] for p in points], marker="o", label="tasks/s")
    left.plot(xs, [p["littles_law_ideal"] for p in points], ":", color="#999999",
              label="Little's-law ideal")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_title("sleep 100 ms: tasks/s")
    left.legend(fontsize=8)
    bottom = [0.0] * len(xs)
    labels = [str(x) for x in xs]
    for key, name in (("worker_cores", "worker"), ("rabbitmq_cores", "RabbitMQ"),
                      ("postgres_cores", "PostgreSQL"), ("idle_cores", "idle")):
        values = [p[key] for p in points]
        mid.bar(labels, values, bottom=bottom, label=name,
                color="#dddddd" if key == "idle_cores" else None)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    mid.set_title("cores used (2 on this machine)")
    mid.set_xlabel("concurrency")
    mid.legend(fontsize=8)
    right.plot(xs, [p["peak_rss_mb"] for p in points], marker="o", color="C3")
    right.set_xscale("log")
    right.set_ylim(bottom=0)
    right.set_title("worker peak RSS, MB")
    for ax in (left, right):
        ax.set_xlabel("concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def processes_chart(data: dict[str, Any], path: Path) -> None:
    """bench.processes' medians: tasks/s, and the cores of worker, RabbitMQ, PostgreSQL."""
    plt = _pyplot()
    counts = sorted(data["medians"], key=int)
    rows = [data["medians"][n] for n in counts]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(counts, [r["throughput"] for r in rows], color="#2a7ab0")
    for x, r in enumerate(rows):
        left.text(x, r["throughput"], f"{r['throughput']:,.0f}", ha="center", va="bottom")
    left.set_title("noop: tasks/s")
    left.set_xlabel("worker processes")
    bottom = [0.0] * len(rows)
    for key, name in (("worker_cores", "worker"), ("rabbitmq_cores", "RabbitMQ"),
                      ("postgres_cores", "PostgreSQL"), ("other_cores", "other"),
                      ("idle_cores", "idle")):
        values = [r[key] for r in rows]
        right.bar(counts, values, bottom=bottom, label=name,
                  color="#dddddd" if key == "idle_cores" else None)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set_title(f"cores ({data['machine']['cores']} on this machine)")
    right.set_xlabel("worker processes")
    right.legend(fontsize=8)
    fig.suptitle(data["command"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    from .run import DSN, REPO

    parser = argparse.ArgumentParser(prog="python -m bench.curves", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="curve", required=True)
    sleep = sub.add_parser("sleep", help="sleep 100 ms at several concurrencies")
    sleep.add_argument("--concurrency", default=",".join(map(str, CONCURRENCIES)))
    sleep.add_argument("--scale", type=float, default=1.0,
                       help="multiply each point's 12 s time budget")
    procs = sub.add_parser("processes", help="chart a bench.processes JSON file")
    procs.add_argument("json", type=Path, nargs="?",
                       default=REPO / "bench" / "results" / "processes.json")
    for p in (sleep, procs):
        p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.curve == "processes":
        processes_chart(json.loads(args.json.read_text()), args.out / f"{args.json.stem}.png")
        print(args.out / f"{args.json.stem}.png")
        return 0
    command = f"python -m bench.curves sleep --concurrency {args.concurrency}" + (
        f" --scale {args.scale:g}" if args.scale != 1.0 else "")
    started = time.monotonic()
    points = sweep([int(c) for c in args.concurrency.split(",")], args.scale,
                   args.out / "curves-sleep.workers.log")
    data: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
        "duration_s": round(time.monotonic() - started, 1), "machine": machine(DSN),
        "points": [asdict(p) for p in points]}
    (args.out / "curves-sleep.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / "curves-sleep.md").write_text(sleep_markdown(data))
    sleep_chart(data["points"], args.out / "curves-sleep.png")
    print(sleep_markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
