"""noop throughput as a share of the raw AMQP floor, both measured in one session.

    python -m bench.floor_ratio                          # 3 rounds of 20,000 tasks
    python -m bench.floor_ratio --rounds 1 --tasks 40000 --profile bench/results/profile-noop.txt

Issue 14's first target is one worker process reaching 80% of what aio-pika
alone does (consume, ack each message, nothing stored). The two figures drift
with the machine's load, so each round measures the floor and then the worker
back to back, and the ratio is taken per round: a ratio of figures from
different runs would mostly measure the drift.

The floor is :func:`bench.floors.amqp_consume_ack` on messages with the same
properties and body the Celery client sends the worker (``same_messages``),
beside the bench's usual small-header floor. The worker row is the bench's own:
``python -m asyncworker worker -c 100 --prefetch-multiplier 4`` on the pre-filled
``bench`` queue, results in PostgreSQL, tasks/s between the 10th and 90th
percentile of ``date_done`` (:class:`bench.run.Bench`).

``--batch-sizes`` adds one more worker run with its metrics port open and
reports the ``asyncworker_result_batch_size`` histogram: how many result rows
each ``executemany`` wrote (that run's figures are not used for the ratio, as
the metrics hooks cost CPU).

``--profile FILE`` attaches py-spy (``--nonblocking``, so the sampling does not
pause the worker) to the worker of the first round while it drains the backlog,
and writes the collapsed stacks to ``FILE.raw`` and a summary (self time by
library, top functions) to ``FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import floors
from .measure import wait_until
from .run import BROKER, REPO, Bench, Config, Result, Workload

NOOP = Workload("noop", "bench.noop", None, 100, 60.0)
CONFIG = Config("asyncworker -c 100", "asyncworker", 100)

# Where a leaf frame's file lives → the library its self time is charged to.
_LIBRARIES = [
    ("asyncworker", "/asyncworker/"), ("aio-pika", "/aio_pika/"), ("aiormq", "/aiormq/"),
    ("pamqp", "/pamqp/"), ("asyncpg", "/asyncpg/"), ("structlog", "/structlog/"),
    ("yarl", "/yarl/"), ("asyncio", "/asyncio/"), ("json", "/json/"),
    ("logging", "/logging/"), ("uuid", "/uuid.py"), ("bench", "/bench/"),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def library(path: str) -> str:
    """The library a source path belongs to (``other`` when none is named above).

    py-spy shortens paths to the package (``asyncio/events.py``), so a marker
    may also start the path.
    """
    rooted = "/" + path
    for name, marker in _LIBRARIES:
        if marker in rooted:
            return name
    if ("/lib/python3" in path and "site-packages" not in path) or "/" not in path:
        return "stdlib (other)"
    return "other"


def summarize(raw: str, top: int = 30) -> str:
    """py-spy ``--format raw`` collapsed stacks → self time by library and top functions."""
    by_library: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        match = _FRAME.match(leaf)
        path = match["file"] if match else leaf
        by_library[library(path)] += count
        by_function[_short(leaf)] += count
        for frame in set(map(_short, frames)):
            inclusive[frame] += count
        total += count
    if not total:
        return "no samples\n"
    out = [f"samples: {total}", "", "self time by library:"]
    out += [f"  {share * 100 / total:5.1f}%  {name}" for name, share in by_library.most_common()]
    out += ["", f"top {top} functions by self time:"]
    out += [f"  {n * 100 / total:5.1f}%  {name}" for name, n in by_function.most_common(top)]
    out += ["", f"top {top} asyncworker functions by inclusive time:"]
    ours = [(name, n) for name, n in inclusive.most_common() if "asyncworker/" in name]
    out += [f"  {n * 100 / total:5.1f}%  {name}" for name, n in ours[:top]]
    return "\n".join(out) + "\n"


def _short(frame: str) -> str:
    """``func (…/site-packages/pkg/mod.py:12)`` → ``func (pkg/mod.py:12)``."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for cut in ("site-packages/", "/lib/python3.11/", str(REPO) + "/"):
        if cut in path:
            path = path.split(cut, 1)[1]
            break
    return f"{match['func']} ({path}:{match['line']})"


class ProfiledBench(Bench):
    """The bench's worker run, with py-spy attached while the backlog drains."""

    def __init__(self, *args: Any, profile: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profile = profile
        self.spy: subprocess.Popen[bytes] | None = None
        #: The worker's metrics port, when its result batch sizes are wanted.
        self.metrics_port: int | None = None
        self.batch_sizes: dict[str, float] = {}

    def _env(self, config: Config) -> dict[str, str]:
        env = super()._env(config)
        if self.metrics_port is not None:
            env["ASYNCWORKER_WORKER_HTTP_PORT"] = str(self.metrics_port)
        return env

    def noop(self, tasks: int) -> Result:
        """One worker run on ``tasks`` pre-filled noop tasks (no latency phase)."""
        result = Result(CONFIG.label, CONFIG.kind, NOOP.name, CONFIG.concurrency)
        self._reset()
        self._publish(NOOP, tasks)
        result.tasks_published = tasks
        with self._worker(CONFIG, NOOP, result) as (process, sampler):
            if self.profile is not None:
                wait_until(lambda: self._done() > 0 or process.poll() is not None, 120)
                seconds = max(2, int(tasks / 6000))  # about the drain time
                self.spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                     str(process.pid), "--nonblocking", "--rate", "250", "--format", "raw",
                     "--duration", str(seconds), "-o", str(self.profile) + ".raw"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._throughput(result, NOOP, process, sampler, tasks, NOOP.budget)
            if self.spy is not None:
                self.spy.wait(60)
            if self.metrics_port is not None:
                self.batch_sizes = scrape_batch_sizes(self.metrics_port)
        return result


def scrape_batch_sizes(port: int) -> dict[str, float]:
    """The worker's ``asyncworker_result_batch_size`` histogram: batches, rows, buckets."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("asyncworker_result_batch_size_"):
            name, _, value = line.rpartition(" ")
            out[name.removeprefix("asyncworker_result_batch_size_")] = float(value)
    count, total = out.get("count", 0.0), out.get("sum", 0.0)
    out["mean_rows_per_batch"] = round(total / count, 1) if count else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor_ratio", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE",
                        help="py-spy the first round's worker; summary to FILE")
    parser.add_argument("--batch-sizes", action="store_true",
                        help="one more worker run with metrics on: rows per result batch")
    parser.add_argument("--out", type=Path, default=None, metavar="JSON",
                        help="write the rounds' figures here")
    args = parser.parse_args(argv)
    out_dir = REPO / "bench" / "results"
    bench = ProfiledBench(False, 1.0, False, out_dir / "floor_ratio.workers.log",
                          profile=args.profile)
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        floor = asyncio.run(floors.amqp_consume_ack(BROKER, args.tasks))
        same = asyncio.run(floors.amqp_consume_ack(BROKER, args.tasks, same_messages=True))
        result = bench.noop(args.tasks)
        bench.profile = None
        row = {"floor_per_s": round(floor), "floor_same_messages_per_s": round(same),
               "noop_per_s": result.throughput, "cpu_ms_per_task": result.cpu_ms_per_task,
               "done": result.tasks_done, "errors": result.errors,
               "ratio": round(result.throughput / floor, 3),
               "ratio_same_messages": round(result.throughput / same, 3)}
        rounds.append(row)
        print(f"[round {i + 1}] {json.dumps(row)}", file=sys.stderr)
    summary = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.floor_ratio " + " ".join(argv or sys.argv[1:]),
        "tasks": args.tasks,
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "median_ratio_same_messages": statistics.median(r["ratio_same_messages"]
                                                        for r in rounds),
    }
    if args.batch_sizes:
        from tests.private_services import free_port

        bench.metrics_port = free_port()
        extra = bench.noop(args.tasks)
        summary["batch_sizes"] = {"noop_per_s_with_metrics": extra.throughput,
                                  **bench.batch_sizes}
    print(json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.profile is not None:
        raw = Path(str(args.profile) + ".raw")
        if wait_until(raw.exists, 10):
            header = (f"# py-spy record --nonblocking --format raw on the worker of\n"
                      f"# {summary['command']}  ({summary['when']})\n"
                      f"# round 1: {json.dumps(rounds[0])}\n\n")
            args.profile.write_text(header + summarize(raw.read_text()))
    time.sleep(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
