"""What task events cost: the same workload through a worker with ``-E`` and without.

    python -m bench.events_cost                      # 5,000 tasks a side, noop and sleep
    python -m bench.events_cost --tasks 20000 --repeat 3

For each workload the worker runs twice per round, events off then on (a
round is repeated ``--repeat`` times and the medians reported). Each run fills
the queue with ``--tasks`` tasks from a real Celery client, starts
``python -m asyncworker worker`` on it and measures, between its first and last
result: the worker's CPU time per task and its throughput (tasks per second
between the 10th and 90th percentile of ``date_done``). With events on, a
Celery ``EventReceiver`` (what Flower runs) consumes them in this process and
counts them, so the broker really delivers every event; the worker's log
says how many it dropped.

Uses its own queue (``bench.events``) and results table
(``bench_events_taskmeta`` in ``BENCH_DSN``'s database), so nothing else is
disturbed. Figures go to ``bench/results/events.md`` and ``events.json``
(``events-no-receiver.*`` with ``--no-receiver``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

from .measure import TreeSampler, machine, wait_until
from .run import BROKER, DSN, REPO, steady_rate

QUEUE = "bench.events"
TABLE = "bench_events_taskmeta"
#: (workload, task, asyncworker concurrency), as in the main benchmark.
WORKLOADS = {"noop": ("bench.noop", 100), "sleep": ("bench.sleep", 1000)}


@dataclass
class Run:
    """One worker run."""

    workload: str
    events: bool
    tasks: int
    done: int = 0
    throughput: float = 0.0
    cpu_ms_per_task: float = 0.0
    events_received: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)
    dropped: int = 0


class EventCounter:
    """Celery's event receiver in a thread, counting events by type."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        self.ready = threading.Event()
        self._conn = client.connection_for_read()
        self.receiver = client.events.Receiver(self._conn, handlers={"*": self._count})
        ready = self.receiver.on_consume_ready

        def on_ready(*args: Any, **kwargs: Any) -> None:
            ready(*args, **kwargs)
            self.ready.set()

        self.receiver.on_consume_ready = on_ready
        self._thread = threading.Thread(target=self.receiver.capture, daemon=True)

    def _count(self, event: dict[str, Any]) -> None:
        self.counts[event["type"]] += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[EventCounter]:
        self._thread.start()
        if not self.ready.wait(15):
            raise RuntimeError("event receiver did not start")
        try:
            yield self
        finally:
            self.receiver.should_stop = True
            self._thread.join(10)
            self._conn.release()


class EventsBench:
    """Runs the worker on one queue and results table, events off and on."""

    def __init__(self, log_path: Path, receive: bool = True) -> None:
        from celery import Celery

        self.receive = receive
        self.client = Celery("bench-events-client", broker=BROKER)
        self.client.conf.update(broker_connection_retry_on_startup=True)
        self.db = psycopg2.connect(DSN)
        self.db.autocommit = True
        self.log_path = log_path

    def _sql(self, sql: str) -> list[tuple[Any, ...]]:
        with self.db.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []

    def _table_exists(self) -> bool:
        return bool(self._sql(f"SELECT to_regclass('{TABLE}')")[0][0])

    def _reset(self) -> None:
        with self.client.connection_for_write() as conn:
            conn.default_channel.queue_declare(QUEUE, durable=True, auto_delete=False)
            conn.default_channel.queue_purge(QUEUE)
        if self._table_exists():
            self._sql(f"TRUNCATE {TABLE}")

    def _done(self) -> int:
        return int(self._sql(f"SELECT count(*) FROM {TABLE}")[0][0]) if self._table_exists() \
            else 0

    def _publish(self, task: str, count: int) -> None:
        with self.client.producer_or_acquire() as producer:
            for _ in range(count):
                self.client.send_task(task, queue=QUEUE, producer=producer)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCWORKER_")}
        env.update(PYTHONUNBUFFERED="1", ASYNCWORKER_BROKER_URL=BROKER,
                   ASYNCWORKER_RESULT_BACKEND=DSN,
                   ASYNCWORKER_DATABASE_TABLE_NAMES=json.dumps({"task": TABLE}),
                   ASYNCWORKER_WORKER_LOG_LEVEL="WARNING", ASYNCWORKER_WORKER_LOG_FORMAT="json")
        return env

    def run(self, workload: str, events: bool, count: int) -> Run:
        task, concurrency = WORKLOADS[workload]
        result = Run(workload, events, count)
        self._reset()
        self._publish(task, count)
        counter = EventCounter(self.client)
        receiving = events and self.receive
        with counter.running() if receiving else contextlib.nullcontext(counter):
            command = [sys.executable, "-m", "asyncworker", "worker", "-A", "bench.apps:app",
                       "-Q", QUEUE, "-c", str(concurrency), "--prefetch-multiplier", "4",
                       *(["-E"] if events else [])]
            with open(self.log_path, "ab") as log:
                log.write(f"\n=== {workload} events={'on' if events else 'off'}\n".encode())
                log.flush()
                start = self.log_path.stat().st_size
                process = subprocess.Popen(command, cwd=REPO, env=self._env(), stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
                sampler = TreeSampler(process.pid).start()
                try:
                    if not wait_until(lambda: self._done() > 0 or process.poll() is not None,
                                      120):
                        raise RuntimeError("the worker produced no result")
                    cpu_start, done_start = sampler.cpu_seconds(), self._done()
                    wait_until(lambda: self._done() >= count or process.poll() is not None,
                               600, 0.05)
                    cpu = sampler.cpu_seconds() - cpu_start
                    done = self._done() - done_start
                finally:
                    sampler.stop()
                    stop(process)
            if receiving:
                # What the worker sent before it stopped has arrived once its
                # worker-offline (the last event it sends) has.
                wait_until(lambda: counter.counts["worker-offline"] > 0, 10)
        rows = [row[0] for row in self._sql(f"SELECT date_done FROM {TABLE} ORDER BY date_done")]
        result.done = len(rows)
        result.throughput = round(steady_rate(rows), 1)
        result.cpu_ms_per_task = round(cpu * 1000 / max(done, 1), 3)
        result.events_by_type = dict(counter.counts)
        result.events_received = sum(counter.counts.values())
        result.dropped = dropped_in(self.log_path, start)
        return result


def stop(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown, killing the group if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def dropped_in(log_path: Path, offset: int) -> int:
    """Events the worker logged as dropped, in its log from ``offset``."""
    with open(log_path, "rb") as log:
        log.seek(offset)
        for raw in log.read().decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if line.get("event") == "events dropped during this run":
                    return int(line.get("dropped", 0))
    return 0


def median(runs: list[Run], key: str) -> float:
    return round(statistics.median(getattr(r, key) for r in runs), 3)


def report(runs: list[Run], args: argparse.Namespace, facts: dict[str, Any]) -> str:
    """The markdown table: per workload, events off and on, and on/off ratios."""
    lines = [
        "# Cost of task events",
        "",
        f"`python -m bench.events_cost --tasks {args.tasks} --repeat {args.repeat}"
        f" --workloads {args.workloads}{' --no-receiver' if args.no_receiver else ''}`"
        f" on {datetime.now(UTC):%Y-%m-%d}: "
        f"{facts['cores']} cores ({facts['cpu']}), Python {facts['python']}, "
        f"PostgreSQL {facts['postgresql']}.",
        "",
        "The same tasks through one worker, task events off and on (`-E`); on, "
        + ("nothing consumes the events (the broker drops them). " if args.no_receiver else
           "a Celery event receiver in the benchmark's process consumes every event. ")
        + "CPU is the worker's (user + system) between "
        "its first and last result; throughput is tasks per second between the 10th and 90th "
        f"percentile of `date_done`. Medians of {args.repeat} run(s) a side.",
        "",
        "| workload | task events | tasks done | tasks/s | CPU ms/task | events received "
        "| dropped |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for workload in args.workloads.split(","):
        sides = {}
        for events in (False, True):
            same = [r for r in runs if r.workload == workload and r.events == events]
            sides[events] = same
            lines.append(
                f"| {workload} | {'on' if events else 'off'} | {min(r.done for r in same)} "
                f"| {median(same, 'throughput'):.0f} | {median(same, 'cpu_ms_per_task'):.3f} "
                f"| {median(same, 'events_received'):.0f} | {max(r.dropped for r in same)} |")
        cpu = median(sides[True], "cpu_ms_per_task") / median(sides[False], "cpu_ms_per_task")
        rate = median(sides[True], "throughput") / median(sides[False], "throughput")
        ratios.append(f"- {workload}: CPU per task x{cpu:.2f} with events, "
                      f"throughput x{rate:.2f}.")
    return "\n".join([*lines, "", "On / off:", "", *ratios, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side")
    parser.add_argument("--workloads", default="noop,sleep")
    parser.add_argument("--no-receiver", action="store_true",
                        help="publish events with nothing consuming them (the broker drops them)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = EventsBench(args.out / "events.log", receive=not args.no_receiver)
    runs: list[Run] = []
    for workload in args.workloads.split(","):
        for _ in range(args.repeat):
            for events in (False, True):
                run = bench.run(workload, events, args.tasks)
                print(f"{workload} events={'on' if events else 'off'}: {run.throughput} tasks/s, "
                      f"{run.cpu_ms_per_task} CPU ms/task, {run.events_received} events",
                      file=sys.stderr)
                runs.append(run)
    facts = machine(DSN)
    name = "events-no-receiver" if args.no_receiver else "events"
    (args.out / f"{name}.json").write_text(json.dumps(
        {"machine": facts, "runs": [asdict(r) for r in runs]}, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(report(runs, args, facts))
    print((args.out / f"{name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
