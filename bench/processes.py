"""Scaling one host from 1 to N worker processes: ``worker --processes N``.

    python -m bench.processes                       # 20,000 noop tasks, 1 and 2 processes, 3 rounds
    python -m bench.processes --tasks 40000 --processes 1,2,4 --repeat 2

Each run fills the queue with ``--tasks`` noop tasks (a real Celery client),
starts ``python -m asyncworker worker -c 100 [--processes N]`` on it and
measures, between its first result and its last: throughput (tasks per second
between the 10th and 90th percentile of ``date_done``) and the CPU time of the
worker's process tree, of RabbitMQ (the ``beam.smp`` listening on the broker
port, with its children) and of PostgreSQL (the postmaster and every backend),
read with psutil, beside the machine's total and idle CPU. Noop tasks make the
broker and the result writes the whole job, so this is where a host runs out.

It runs against a private RabbitMQ, PostgreSQL and Redis on loopback
(``tests.private_services``), so their CPU is this benchmark's alone. Rounds
alternate 1, 2, ... processes so drift in the machine's load falls on all
alike; the table gives medians. Output: ``bench/results/processes.md`` and
``processes.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from tests.private_services import PrivateServices, free_port

from .events_cost import stop
from .measure import TreeSampler, machine, wait_until
from .run import REPO, steady_rate

QUEUE = "bench.processes"
CONCURRENCY = 100


@dataclass
class Run:
    """One worker run."""

    processes: int
    tasks: int
    done: int = 0
    seconds: float = 0.0
    throughput: float = 0.0
    worker_cores: float = 0.0
    rabbitmq_cores: float = 0.0
    postgres_cores: float = 0.0
    other_cores: float = 0.0
    idle_cores: float = 0.0
    worker_cpu_ms_per_task: float = 0.0
    #: Cores the machine was busy with in the 3 s before the run (other sessions).
    busy_before: float = 0.0


def listener(port: int) -> psutil.Process:
    """The process listening on ``port`` on this machine."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port \
                and conn.pid:
            return psutil.Process(conn.pid)
    raise RuntimeError(f"nothing listens on port {port}")


class MachineCpu:
    """Busy and idle CPU seconds of the whole machine, all cores."""

    def __init__(self) -> None:
        self.start = psutil.cpu_times()

    def since(self) -> tuple[float, float]:
        now = psutil.cpu_times()
        idle = (now.idle - self.start.idle) + (now.iowait - self.start.iowait)
        total = sum(now) - sum(self.start)
        return total - idle, idle


class ProcessesBench:
    """Runs the worker with 1, 2 ... processes on one private set of services."""

    def __init__(self, services: PrivateServices, log_path: Path) -> None:
        from celery import Celery

        self.services = services
        self.dsn = services.pg_dsn
        self.client = Celery("bench-processes", broker=services.broker_url)
        self.client.conf.update(broker_connection_retry_on_startup=True)
        self.db = psycopg2.connect(self.dsn)
        self.db.autocommit = True
        self.log_path = log_path
        self.rabbitmq = listener(services.amqp_port)
        self.postgres = listener(services.pg_port)

    def _sql(self, sql: str) -> list[tuple[Any, ...]]:
        with self.db.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []

    def _done(self) -> int:
        if not self._sql("SELECT to_regclass('celery_taskmeta')")[0][0]:
            return 0
        return int(self._sql("SELECT count(*) FROM celery_taskmeta")[0][0])

    def _reset(self, count: int) -> None:
        with self.client.connection_for_write() as conn:
            conn.default_channel.queue_declare(QUEUE, durable=True, auto_delete=False)
            conn.default_channel.queue_purge(QUEUE)
        if self._sql("SELECT to_regclass('celery_taskmeta')")[0][0]:
            self._sql("TRUNCATE celery_taskmeta")
        with self.client.producer_or_acquire() as producer:
            for _ in range(count):
                self.client.send_task("bench.noop", queue=QUEUE, producer=producer)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCWORKER_")}
        env.update(PYTHONUNBUFFERED="1", ASYNCWORKER_BROKER_URL=self.services.broker_url,
                   ASYNCWORKER_RESULT_BACKEND=self.dsn, ASYNCWORKER_WORKER_LOG_LEVEL="WARNING",
                   ASYNCWORKER_WORKER_LOG_FORMAT="json")
        return env

    def run(self, processes: int, count: int, max_busy: float | None,
            metrics: bool = False) -> Run:
        self._reset(count)
        result = Run(processes, count, busy_before=quiet_machine(max_busy))
        command = [sys.executable, "-m", "asyncworker", "worker", "-A", "bench.apps:app",
                   "-Q", QUEUE, "-c", str(CONCURRENCY), "--prefetch-multiplier", "4",
                   "--processes", str(processes)]
        if metrics:  # the group's endpoint: the children write prometheus-client's files
            command += ["--http-port", str(free_port())]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== --processes {processes}\n".encode())
            log.flush()
            process = subprocess.Popen(command, cwd=REPO, env=self._env(), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            # worker tree, RabbitMQ, PostgreSQL
            samplers = [TreeSampler(p.pid, 0.5).start()
                        for p in (process, self.rabbitmq, self.postgres)]
            try:
                if not wait_until(lambda: self._done() > 0 or process.poll() is not None, 120):
                    raise RuntimeError("the worker produced no result")
                before = [s.cpu_seconds() for s in samplers]
                cpu, started = MachineCpu(), time.monotonic()
                wait_until(lambda: self._done() >= count or process.poll() is not None,
                           600, 0.2)
                seconds = time.monotonic() - started
                used = [s.cpu_seconds() - b for s, b in zip(samplers, before, strict=True)]
                busy, idle = cpu.since()
            finally:
                for sampler in samplers:
                    sampler.stop()
                stop(process)
        rows = [row[0] for row in self._sql("SELECT date_done FROM celery_taskmeta "
                                            "ORDER BY date_done")]
        result.done = len(rows)
        result.seconds = round(seconds, 2)
        result.throughput = round(steady_rate(rows), 1)
        cores = [round(u / seconds, 3) for u in used]
        result.worker_cores, result.rabbitmq_cores, result.postgres_cores = cores
        result.other_cores = round(max(0.0, busy - sum(used)) / seconds, 3)
        result.idle_cores = round(idle / seconds, 3)
        result.worker_cpu_ms_per_task = round(used[0] * 1000 / max(result.done, 1), 3)
        return result


def quiet_machine(max_busy: float | None, patience: float = 600.0) -> float:
    """Wait (up to ``patience`` seconds) until the machine's busy cores over 3 s are at
    most ``max_busy``; return the last reading. Other sessions share the machine."""
    deadline = time.monotonic() + patience
    while True:
        busy = round(psutil.cpu_percent(interval=3.0) / 100 * (os.cpu_count() or 1), 2)
        if max_busy is None or busy <= max_busy or time.monotonic() > deadline:
            return busy
        print(f"[waiting] the machine is busy with {busy} cores", file=sys.stderr)


@contextlib.contextmanager
def private_services() -> Iterator[PrivateServices]:
    """A private RabbitMQ, PostgreSQL and Redis, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="asyncworker-processes-"))
    tmp.chmod(0o755)  # PostgreSQL runs as another user
    services = PrivateServices(tmp / "services")
    try:
        services.start()
        yield services
    finally:
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)


KEYS = ("throughput", "worker_cores", "rabbitmq_cores", "postgres_cores", "other_cores",
        "idle_cores", "worker_cpu_ms_per_task")


def medians(runs: list[Run]) -> dict[str, float]:
    return {key: round(statistics.median(getattr(r, key) for r in runs), 3) for key in KEYS}


def report(runs: list[Run], command: str, facts: dict[str, Any]) -> str:
    """The markdown table: one row per process count, medians of its runs."""
    counts = sorted({r.processes for r in runs})
    lines = [
        "# Scaling from 1 to N worker processes on one host",
        "",
        f"`{command}` on {datetime.now(UTC):%Y-%m-%d}: {facts['cores']} cores "
        f"({facts['cpu']}), Python {facts['python']}, PostgreSQL {facts['postgresql']} "
        f"(fsync={facts['postgresql_fsync']}), private RabbitMQ and PostgreSQL on loopback.",
        "",
        f"Noop tasks (result stored in PostgreSQL), `-c {CONCURRENCY}` per process, queue "
        "pre-filled. Throughput: tasks/s between the 10th and 90th percentile of `date_done`. "
        "CPU in cores (CPU seconds ÷ wall seconds) between the first and the last result: "
        "the worker's process tree (the supervisor included), RabbitMQ's, PostgreSQL's, every "
        "other process on the machine (other sessions share it), and idle. Medians of "
        f"{len(runs) // max(len(counts), 1)} run(s) each; every run in the JSON file."
        + (" Metrics on (`--http-port`): with more than one process the children write "
           "prometheus-client's multiprocess files." if "--metrics" in command else ""),
        "",
        "| processes | tasks/s | worker cores | RabbitMQ cores | PostgreSQL cores "
        "| other cores | idle cores | worker CPU ms/task | runs: tasks/s (other cores) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = None
    for n in counts:
        same = [r for r in runs if r.processes == n]
        m = medians(same)
        base = base or m["throughput"]
        lines.append(
            f"| {n} | {m['throughput']:,.0f} | {m['worker_cores']:.2f} | "
            f"{m['rabbitmq_cores']:.2f} | {m['postgres_cores']:.2f} | {m['other_cores']:.2f} "
            f"| {m['idle_cores']:.2f} | {m['worker_cpu_ms_per_task']:.3f} | "
            + ", ".join(f"{r.throughput:,.0f} ({r.other_cores:.2f})" for r in same) + " |")
    cores = facts["cores"]
    lines += ["", f"CPU left for RabbitMQ and PostgreSQL ({cores} cores less the worker's), "
              "and what they used: " + "; ".join(
                  f"{n} process(es): {cores - m['worker_cores']:.2f} left, "
                  f"{m['rabbitmq_cores'] + m['postgres_cores']:.2f} used"
                  for n in counts if (m := medians([r for r in runs if r.processes == n])))
              + "."]
    if base:
        lines += ["", "Throughput against one process: " + ", ".join(
            f"{n} → ×{medians([r for r in runs if r.processes == n])['throughput'] / base:.2f}"
            for n in counts) + "."]
    return "\n".join([*lines, ""])


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.processes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20000, help="tasks per run")
    parser.add_argument("--processes", default="1,2", help="process counts to compare")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument("--max-busy", type=float, default=None, metavar="CORES",
                        help="before each run, wait (up to 10 min) until other processes use "
                             "at most this many cores (measured over 3 s)")
    parser.add_argument("--metrics", action="store_true",
                        help="serve metrics (--http-port): with N > 1, in multiprocess mode")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--name", default="processes", help="output file stem")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.processes.split(",")]
    command = (f"python -m bench.processes --tasks {args.tasks} --processes {args.processes} "
               f"--repeat {args.repeat}"
               + (f" --max-busy {args.max_busy:g}" if args.max_busy is not None else "")
               + (" --metrics" if args.metrics else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)  # as Ctrl-C: the private services are stopped
    runs: list[Run] = []
    started = time.monotonic()
    with private_services() as services:
        bench = ProcessesBench(services, args.out / f"{args.name}.log")
        bench.log_path.write_bytes(b"")
        for _ in range(args.repeat):
            for n in counts:
                run = bench.run(n, args.tasks, args.max_busy, args.metrics)
                print(f"--processes {n}: {run.throughput} tasks/s, worker {run.worker_cores} "
                      f"cores, RabbitMQ {run.rabbitmq_cores}, PostgreSQL {run.postgres_cores}, "
                      f"other {run.other_cores}, idle {run.idle_cores} "
                      f"(busy before: {run.busy_before} cores)", file=sys.stderr)
                runs.append(run)
        facts = machine(services.pg_dsn)
    data = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
            "duration_s": round(time.monotonic() - started, 1), "machine": facts,
            "concurrency": CONCURRENCY, "runs": [asdict(r) for r in runs],
            "medians": {n: medians([r for r in runs if r.processes == n]) for n in counts}}
    (args.out / f"{args.name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(report(runs, command, facts))
    print((args.out / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
