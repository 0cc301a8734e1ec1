"""Many long tasks in flight in one worker: wall time against the ideal, and memory per task.

    python -m bench.inflight --tasks 40000 --concurrency 10000 --sleep 10
    python -m bench.inflight --baseline HEAD~3          # that revision first, then this tree
    python -m bench.inflight --tracemalloc --tasks 10000 --sleep 60   # what each task holds

The target (issue 14): 10,000 tasks in flight in at most 200 MB, and 40,000
tasks of a 10 s sleep at concurrency 10,000 within 10% of the ideal 40 s.

One row is one asyncworker process (results in PostgreSQL, database
``asyncworker_bench``, queue ``bench-inflight``; nothing else may use them
meanwhile):

1. an idle worker is started on the empty queue; its RSS once it consumes is
   the baseline;
2. the queue is filled with ``--tasks`` tasks by a real Celery client, then a
   fresh worker starts (``-c`` concurrency, ``--prefetch-multiplier``, 1 by
   default: the window is the concurrency). Until every result is stored the
   bench polls the queue and the results table: the tasks the worker holds are
   those published, neither waiting in the queue nor done. RSS is sampled every
   100 ms;
3. reported: wall time from the worker's start (and from its first consume) to
   the last ``date_done``, against the ideal ``ceil(tasks / concurrency) x
   sleep``; each wave's first and last completion; peak RSS, the baseline, and
   (peak - baseline) / most tasks held, the bytes per task in flight.

With ``--tracemalloc`` the worker traces allocations (``bench/inflight_app.py``)
and dumps a snapshot once every task is held and none is done, and another
once all are done; their difference, by traceback, is what the tasks in
flight held (tracing slows the worker many times over: use a long ``--sleep``
so that no task ends before the first snapshot).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

from . import baseline
from .events_cost import stop
from .measure import TreeSampler, wait_until
from .run import ASYNCWORKER_PYTHON, BROKER, DSN, REPO

QUEUE = "bench-inflight"
TASK = "bench.inflight_sleep"
APP = "bench.inflight_app:app"


@dataclass
class Row:
    """One worker's figures."""

    label: str
    tasks: int
    concurrency: int
    prefetch_multiplier: int
    sleep_s: float
    ideal_s: float
    done: int = 0
    wall_s: float = 0.0  # worker start → last date_done
    wall_from_consume_s: float = 0.0  # first consume → last date_done
    startup_s: float = 0.0  # worker start → consuming
    over_ideal: float = 0.0  # wall_from_consume_s / ideal
    waves: list[tuple[float, float]] = field(default_factory=list)  # (first, last) done, s
    baseline_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    max_held: int = 0  # most tasks in the worker at once (running + prefetched)
    bytes_per_task: float = 0.0  # (peak - baseline) / max_held
    errors: int = 0
    notes: list[str] = field(default_factory=list)


class Inflight:
    """The queue, the results table and the workers of one session."""

    def __init__(self, log_path: Path, tree: baseline.Baseline | None) -> None:
        from celery import Celery

        self.tree = tree
        self.log_path = log_path
        self.client = Celery("bench-inflight", broker=BROKER)
        self.client.conf.update(broker_connection_retry_on_startup=True)
        self.db = psycopg2.connect(DSN)
        self.db.autocommit = True
        self._conn = self.client.connection_for_write()
        self._conn.ensure_connection()

    def _sql(self, sql: str) -> list[tuple[Any, ...]]:
        with self.db.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []

    def _queue(self) -> tuple[int, int]:
        """(messages ready, consumers) of the queue."""
        ok = self._conn.default_channel.queue_declare(QUEUE, durable=True, auto_delete=False)
        return int(ok.message_count), int(ok.consumer_count)

    def _done(self) -> int:
        if not self._sql("SELECT to_regclass('celery_taskmeta')")[0][0]:
            return 0
        return int(self._sql("SELECT count(*) FROM celery_taskmeta")[0][0])

    def reset(self, count: int) -> None:
        """An empty table, and ``count`` tasks in the queue."""
        self._queue()
        self._conn.default_channel.queue_purge(QUEUE)
        if self._sql("SELECT to_regclass('celery_taskmeta')")[0][0]:
            self._sql("TRUNCATE celery_taskmeta")
        with self.client.producer_or_acquire() as producer:
            for _ in range(count):
                self.client.send_task(TASK, queue=QUEUE, producer=producer)

    def env(self, sleep: float, old: bool, trace: str = "") -> dict[str, str]:
        """The worker's environment: this tree's or the baseline's asyncworker."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ASYNCWORKER_", "BENCH_", "INFLIGHT_"))}
        env.update(PYTHONUNBUFFERED="1", ASYNCWORKER_BROKER_URL=BROKER,
                   ASYNCWORKER_RESULT_BACKEND=DSN, ASYNCWORKER_WORKER_LOG_LEVEL="WARNING",
                   ASYNCWORKER_WORKER_LOG_FORMAT="json", INFLIGHT_SLEEP=str(sleep))
        first = self.tree.path if old and self.tree else REPO
        env["PYTHONPATH"] = baseline.python_path(first, REPO, os.environ.get("PYTHONPATH"))
        if trace:
            env["INFLIGHT_TRACEMALLOC"] = trace
        return env

    @contextlib.contextmanager
    def worker(self, label: str, concurrency: int, multiplier: int,
               env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], TreeSampler]]:
        """A worker process and its sampler; stopped (warm, then killed) on exit."""
        command = [*ASYNCWORKER_PYTHON, "-m", "asyncworker", "worker", "-A", APP, "-Q", QUEUE,
                   "-c", str(concurrency), "--prefetch-multiplier", str(multiplier)]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {label}\n".encode())
            log.flush()
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                   stderr=log, start_new_session=True)
            sampler = TreeSampler(process.pid).start()
            try:
                yield process, sampler
            finally:
                sampler.stop()
                stop(process)

    def idle_rss(self, label: str, concurrency: int, multiplier: int,
                 env: dict[str, str]) -> float:
        """RSS (MB) of a worker consuming the empty queue, 1 s after it began to."""
        self.reset(0)
        with self.worker(f"{label} (idle)", concurrency, multiplier, env) as (process, sampler):
            wait_until(lambda: self._queue()[1] > 0 or process.poll() is not None, 60)
            time.sleep(1.0)
            sampler.sample()
            return round(sampler.peak_rss / 2**20, 1)

    def run(self, label: str, tasks: int, concurrency: int, multiplier: int, sleep: float,
            old: bool) -> Row:
        """One measured row (idle baseline, then the full run)."""
        waves = math.ceil(tasks / concurrency)
        row = Row(label, tasks, concurrency, multiplier, sleep, waves * sleep)
        env = self.env(sleep, old)
        row.baseline_rss_mb = self.idle_rss(label, concurrency, multiplier, env)
        self.reset(tasks)
        limit = 120 + 4 * row.ideal_s
        with self.worker(label, concurrency, multiplier, env) as (process, sampler):
            started = time.time()
            consuming = 0.0
            deadline = time.monotonic() + limit
            done = 0
            while time.monotonic() < deadline and process.poll() is None:
                ready, consumers = self._queue()
                if consumers and not consuming:
                    consuming = time.time()
                done = self._done()
                row.max_held = max(row.max_held, tasks - ready - done)
                if done >= tasks:
                    break
                time.sleep(0.1)
            row.peak_rss_mb = round(sampler.peak_rss / 2**20, 1)
        stamps = sorted(d.replace(tzinfo=UTC).timestamp() for (d,) in self._sql(
            "SELECT date_done FROM celery_taskmeta"))
        row.done = len(stamps)
        row.errors = int(self._sql(
            "SELECT count(*) FROM celery_taskmeta WHERE status <> 'SUCCESS'")[0][0])
        if row.done < tasks:
            row.notes.append(f"{tasks - row.done} of {tasks} tasks had no result in {limit:.0f} s")
        if stamps and consuming:
            row.startup_s = round(consuming - started, 2)
            row.wall_s = round(stamps[-1] - started, 2)
            row.wall_from_consume_s = round(stamps[-1] - consuming, 2)
            row.over_ideal = round(row.wall_from_consume_s / row.ideal_s, 3)
            row.waves = [(round(stamps[i] - consuming, 2),
                          round(stamps[min(i + concurrency, len(stamps)) - 1] - consuming, 2))
                         for i in range(0, len(stamps), concurrency)]
        if row.max_held:
            row.bytes_per_task = round((row.peak_rss_mb - row.baseline_rss_mb) * 2**20
                                       / row.max_held)
        return row

    def trace(self, label: str, tasks: int, concurrency: int, multiplier: int, sleep: float,
              old: bool, prefix: Path) -> tuple[Path, Path]:
        """Two snapshots: every task held and none done, then all done."""
        for stale in prefix.parent.glob(prefix.name + ".*"):
            stale.unlink()
        self.reset(tasks)
        env = self.env(sleep, old, str(prefix))
        with self.worker(f"{label} (tracemalloc)", concurrency, multiplier, env) as (
                process, _sampler):
            taken = [0]

            def snapshot() -> tuple[Path, int]:
                """One more snapshot; its path and the jobs the worker held then."""
                taken[0] += 1
                done = Path(f"{prefix}.{taken[0]}.done")
                process.send_signal(10)  # SIGUSR1: bench/inflight_app.py dumps one
                if not wait_until(lambda: done.exists(), 300, 0.5):
                    raise RuntimeError("the worker wrote no snapshot")
                return Path(f"{prefix}.{taken[0]}.snapshot"), int(done.read_text())

            if not wait_until(lambda: self._queue()[0] == 0 and self._queue()[1] > 0,
                              600, 0.5):
                raise RuntimeError("the worker did not take every task")
            while True:  # delivered is not yet received: wait until every job is held
                held, jobs = snapshot()
                if self._done():
                    raise RuntimeError("tasks ended before the snapshot: use a longer --sleep")
                if jobs >= tasks:
                    break
                time.sleep(5.0)
            if not wait_until(lambda: self._done() >= tasks, 600 + sleep, 0.5):
                raise RuntimeError("not every task finished")
            time.sleep(3.0)
            idle, _ = snapshot()
            return held, idle


def tracemalloc_report(held: Path, idle: Path, tasks: int, top: int = 25) -> str:
    """What the tasks in flight held: snapshot differences by line and by traceback."""
    a = tracemalloc.Snapshot.load(str(held))
    b = tracemalloc.Snapshot.load(str(idle))
    lines: list[str] = []
    by_line = a.compare_to(b, "lineno")
    total = sum(d.size_diff for d in by_line)
    lines.append(f"held - idle: {total / 2**20:.1f} MiB traced, {total / tasks:,.0f} B "
                 f"per task ({tasks} tasks)\n")
    lines.append(f"top {top} by line (size diff, B per task, count diff):")
    for d in by_line[:top]:
        frame = d.traceback[0]
        lines.append(f"  {d.size_diff / 2**10:9.1f} KiB {d.size_diff / tasks:7.0f} B/task "
                     f"{d.count_diff:+8d}  {_short(frame.filename)}:{frame.lineno}")
    lines.append(f"\ntop {top // 2} by traceback (innermost last):")
    for d in a.compare_to(b, "traceback")[:top // 2]:
        lines.append(f"- {d.size_diff / 2**10:.1f} KiB, {d.size_diff / tasks:.0f} B/task, "
                     f"{d.count_diff:+d} blocks")
        for frame in list(d.traceback)[-6:]:
            lines.append(f"      {_short(frame.filename)}:{frame.lineno}")
    return "\n".join(lines) + "\n"


def types_report(held: Path, idle: Path, tasks: int, top: int = 25) -> str:
    """Live objects by type: held minus idle, the most first."""
    def load(path: Path) -> dict[str, int]:
        pairs = (line.rstrip("\n").split("\t") for line in path.read_text().splitlines())
        return {name: int(n) for n, name in pairs}

    a, b = load(held), load(idle)
    diff = sorted(((a[k] - b.get(k, 0), k) for k in a), reverse=True)[:top]
    return "live objects, held - idle (per task):\n" + "".join(
        f"  {n:+8d} ({n / tasks:5.2f})  {name}\n" for n, name in diff)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/asyncworker/", "/lib/python3"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return (marker.strip("/") + "/" if marker == "/asyncworker/" else "") + tail
    return filename


def markdown(data: dict[str, Any]) -> str:
    """The rows as a table, with the command and the target."""
    out = [f"# Tasks in flight ({data['when']})", "", f"`{data['command']}`", "",
           "Target: 10,000 in flight in ≤ 200 MB; wall from first consume within 10% of "
           "ideal.", "",
           "| worker | tasks | -c | prefetch × | ideal s | wall s (from start) | "
           "wall s (from consume) | × ideal | waves (first–last done, s) | baseline MB | "
           "peak MB | most held | B / task held | errors |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        waves = "; ".join(f"{a:.1f}–{b:.1f}" for a, b in r["waves"])
        out.append(f"| {r['label']} | {r['tasks']:,} | {r['concurrency']:,} | "
                   f"{r['prefetch_multiplier']} | {r['ideal_s']:.0f} | {r['wall_s']:.1f} | "
                   f"{r['wall_from_consume_s']:.1f} | {r['over_ideal']:.3f} | {waves} | "
                   f"{r['baseline_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['max_held']:,} | "
                   f"{r['bytes_per_task']:,.0f} | {r['errors']} |")
        out += [f"  - {r['label']}: {n}" for n in r["notes"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.inflight", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=40_000)
    parser.add_argument("--concurrency", type=int, default=10_000)
    parser.add_argument("--sleep", type=float, default=10.0)
    parser.add_argument("--prefetch-multiplier", type=int, default=1)
    parser.add_argument("--baseline", default="", metavar="REF",
                        help="also run asyncworker from this git revision, first")
    parser.add_argument("--baseline-only", action="store_true",
                        help="run only the --baseline revision (a long --tracemalloc run "
                             "split in two)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="snapshots of what the tasks hold instead of timings")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--name", default="inflight")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.inflight " + " ".join(argv if argv is not None else sys.argv[1:])
    with contextlib.ExitStack() as stack:
        tree = stack.enter_context(baseline.checkout(REPO, args.baseline)) \
            if args.baseline else None
        bench = Inflight(args.out / f"{args.name}.workers.log", tree)
        bench.log_path.write_bytes(b"")
        sides = [(f"asyncworker@{tree.commit}", True)] if tree else []
        if not (tree and args.baseline_only):
            sides.append(("asyncworker", False))
        if args.tracemalloc:
            for label, old in sides:
                tag = label.replace("asyncworker@", "").replace("asyncworker", "this")
                prefix = Path("/tmp") / f"{args.name}-{tag}"
                held, idle = bench.trace(label, args.tasks, args.concurrency,
                                         args.prefetch_multiplier, args.sleep, old, prefix)
                text = (f"# {label}: tracemalloc, {args.tasks} tasks in flight\n"
                        f"# {command}\n\n"
                        + tracemalloc_report(held, idle, args.tasks) + "\n"
                        + types_report(held.with_suffix(".types"),
                                       idle.with_suffix(".types"), args.tasks))
                (args.out / f"{args.name}-tracemalloc-{tag}.txt").write_text(text)
                print(text)
            return 0
        rows = []
        for label, old in sides:
            print(f"[inflight] {label}", file=sys.stderr)
            rows.append(bench.run(label, args.tasks, args.concurrency,
                                  args.prefetch_multiplier, args.sleep, old))
    data = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
            "rows": [asdict(r) for r in rows]}
    (args.out / f"{args.name}.json").write_text(json.dumps(data, indent=2) + "\n")
    text = markdown(data)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
