"""asyncworker against Celery's pools, side by side on one queue.

    python -m bench            # full run, ~15 minutes; results in bench/results/
    python -m bench --quick    # a smaller run, under 3 minutes

    # this tree against HEAD~1, five runs a side (scratch output: bench/results/tmp)
    python -m bench --quick --workloads noop,sleep --configs asyncworker --baseline HEAD~1 \\
        --repeat 5 --out bench/results/tmp

With ``--baseline REF`` each asyncworker row of noop and sleep gets a twin,
``asyncworker@<commit>``, whose worker imports asyncworker from a temporary git
worktree of REF (and the tasks from this tree); ``--repeat N`` runs every
asyncworker row N times, interleaved with its twin, and reports the medians.

Every run uses the same RabbitMQ queue (``bench``), the same PostgreSQL
``celery_taskmeta`` (database ``asyncworker_bench``) and tasks published by a
real Celery client; nothing else may use them meanwhile, as each run empties
them (``BENCH_DSN`` and ``BENCH_BROKER_URL`` point the bench elsewhere). A run
has two phases:

1. Throughput: the queue is filled first, then the worker starts; tasks per
   second are counted between the 10th and 90th percentile of the result rows'
   ``date_done`` within the time budget, so start-up, publishing and one stall
   at either end cost nothing.
2. Latency: the backlog is dropped, a fresh worker starts, and an open-loop
   publisher in its own process sends tasks at half the measured throughput,
   each stamped with its send time; latency is ``date_done`` - that stamp,
   leaving out the first seconds (warm-up). See :mod:`bench.latency`;
   ``--latency-curve`` adds 25, 50, 75 and 90% of the throughput.

Peak RSS is summed over the worker's whole process tree, sampled every 100 ms.

Rows labelled ``redis-broker`` (noop and sleep: asyncworker, and Celery prefork)
take their tasks from Redis instead (database 10, or ``BENCH_REDIS_BROKER_URL``,
emptied per run, kombu's list format), results still in PostgreSQL; their
latency phase publishes from the bench process through the Celery client.

The asyncio peers, aio-celery and taskiq, get rows of their own at asyncworker's
concurrency (``--configs aio-celery,taskiq``); their results live in Redis (database
14, or ``BENCH_REDIS_URL``), which each of their runs empties: see :mod:`bench.peers`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psutil
import psycopg2

from . import baseline, floors, latency, peers, report, servers
from .measure import TreeSampler, machine, percentile, wait_until

if TYPE_CHECKING:
    from .peers.driver import Side

REPO = Path(__file__).resolve().parents[1]
BROKER = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_BROKER = os.environ.get("BENCH_REDIS_BROKER_URL", "redis://127.0.0.1:6379/10")
#: Workloads with Redis-broker rows (all of them in a full run; noop alone with --quick).
REDIS_BROKER_WORKLOADS = ("noop", "sleep")
DSN = os.environ.get("BENCH_DSN",
                     "postgresql://asyncworker:asyncworker@127.0.0.1:5432/asyncworker_bench")
QUEUE = "bench"
BUCKET = "bench-images"
GPT_LATENCY = "lognormal:1.0:0.2"  # median 1 s, as a vision model call takes
# -P: the worker's cwd (this tree) must not come before PYTHONPATH, or a baseline
# worker would import this tree's asyncworker; PYTHONPATH then names the tree.
ASYNCWORKER_PYTHON = (sys.executable, "-P")
ALL_WORKLOADS = "sleep,vision,noop"
BASELINE_WORKLOADS = ("noop", "sleep")
NO_BASELINE = "its task modules import asyncworker internals, whose paths may differ by version"


@dataclass(frozen=True)
class Config:
    """One worker set-up."""

    label: str
    kind: str  # "asyncworker", "celery", or a peer's (peers.KINDS)
    concurrency: int
    pool: str = ""  # Celery's -P; "uvloop" for asyncworker on uvloop
    tuned: bool = False
    baseline: str = ""  # short commit whose asyncworker runs; "" = this tree
    twin_of: str = ""  # for a baseline row: the label of the same set-up on this tree
    processes: int = 1  # asyncworker's --processes
    results: str = ""  # "redis": results in the peers' Redis store instead of PostgreSQL
    broker: str = ""  # "redis": tasks through REDIS_BROKER instead of RabbitMQ

    @property
    def broker_url(self) -> str:
        return REDIS_BROKER if self.broker == "redis" else BROKER


@dataclass(frozen=True)
class Workload:
    """What each task does, and the asyncworker concurrency it runs at."""

    name: str
    task: str
    service_time: float | None  # seconds of waiting per task, for Little's law
    concurrency: int
    budget: float  # seconds of throughput phase


@dataclass
class Result:
    """Figures of one (config, workload) run."""

    config: str
    kind: str
    workload: str
    concurrency: int
    baseline: str = ""
    twin_of: str = ""
    tasks_published: int = 0
    tasks_done: int = 0
    throughput: float = 0.0
    littles_law_ideal: float | None = None
    latency_rate: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    cpu_ms_per_task: float | None = None
    errors: int = 0
    notes: list[str] = field(default_factory=list)
    cannot: str = ""  # why this worker cannot run the workload (the row says so, unmeasured)
    # Every run's figures, in run order (one unless --repeat); the fields above are medians.
    throughput_runs: list[float] = field(default_factory=list)
    cpu_ms_per_task_runs: list[float] = field(default_factory=list)
    latency_p99_ms_runs: list[float] = field(default_factory=list)
    latency_point: dict[str, Any] = field(default_factory=dict)  # bench.latency.Point
    latency_curve: list[dict[str, Any]] = field(default_factory=list)  # --latency-curve


def configs_for(workload: Workload, quick: bool) -> list[Config]:
    """The configurations each workload is run with."""
    c = workload.concurrency
    out = [Config(f"asyncworker -c {c}", "asyncworker", c)]
    if not quick:
        out.append(Config(f"asyncworker -c {c} uvloop", "asyncworker", c, "uvloop"))
        # One process per core under the supervisor (python -m bench.processes for the
        # broker's and the database's share of the CPU).
        out.append(Config(f"asyncworker -c {c} --processes 2", "asyncworker", c, processes=2))
    out += peers.configs(c, workload.name)
    out.append(Config("prefork -c 2", "celery", 2, "prefork"))
    if not quick:
        out += [Config("prefork -c 8", "celery", 8, "prefork"),
                Config("prefork -c 32", "celery", 32, "prefork"),
                Config(f"gevent -c {c}", "celery", c, "gevent"),
                Config(f"gevent -c {c} tuned", "celery", c, "gevent", tuned=True)]
    out.append(Config("threads -c 100", "celery", 100, "threads"))
    if workload.name in REDIS_BROKER_WORKLOADS and (not quick or workload.name == "noop"):
        # The same pair on the other broker Celery users pick.
        out += [Config(f"asyncworker -c {c} redis-broker", "asyncworker", c, broker="redis"),
                Config("prefork -c 2 redis-broker", "celery", 2, "prefork", broker="redis")]
        if not quick:
            out.append(Config("prefork -c 8 redis-broker", "celery", 8, "prefork",
                              broker="redis"))
    return out


def baseline_twin(config: Config, commit: str) -> Config:
    """``config`` with asyncworker imported from ``commit``: ``asyncworker@<commit> -c 100``."""
    return replace(config, label=config.label.replace("asyncworker", f"asyncworker@{commit}", 1),
                   baseline=commit, twin_of=config.label)


def selected(config: Config, wanted: list[str]) -> bool:
    """Whether ``--configs`` keeps ``config``: a part of its label, or its kind, was
    named; ``=label`` names one label exactly."""
    return not wanted or any(config.label == s[1:] if s.startswith("=")
                             else s in config.label or s == config.kind for s in wanted)


def plan(chosen: list[Workload], quick: bool, wanted: list[str], commit: str,
         repeat: int) -> list[tuple[Config, Workload]]:
    """Every run in order, workload by workload.

    asyncworker rows come first, each followed by its baseline twin (when ``commit``
    is set), and the lot ``repeat`` times over: new, old, new, old..., so drift in
    the machine's speed falls on both sides alike. Celery rows run once.
    """
    steps: list[tuple[Config, Workload]] = []
    for workload in chosen:
        configs = [c for c in configs_for(workload, quick) if selected(c, wanted)]
        ours = [c for c in configs if c.kind == "asyncworker"]
        if commit and workload.name in BASELINE_WORKLOADS:
            # An older tree may not know --processes or Redis; the Redis rows compare with
            # the peers and with prefork on Redis.
            ours = [twin for c in ours for twin in (
                (c, baseline_twin(c, commit))
                if c.processes == 1 and not c.results and not c.broker else (c,))]
        steps += [(c, workload) for _ in range(repeat) for c in ours]
        steps += [(c, workload) for c in configs if c.kind != "asyncworker"]
    return steps


def merge(runs: list[Result]) -> Result:
    """One row from a configuration's runs.

    Totals (tasks, CPU seconds, errors) are summed, peak RSS is the highest, and
    the per-run figures (throughput, CPU per task, latency) are medians; every
    run's throughput and CPU per task are kept for the spread.
    """
    def median(key: str, digits: int = 1) -> float | None:
        values = [v for r in runs if (v := getattr(r, key)) is not None]
        return round(statistics.median(values), digits) if values else None

    many = len(runs) > 1
    return replace(
        runs[0],
        tasks_published=sum(r.tasks_published for r in runs),
        tasks_done=sum(r.tasks_done for r in runs),
        throughput=median("throughput") or 0.0,
        latency_rate=median("latency_rate") or 0.0,
        latency_p50_ms=median("latency_p50_ms"),
        latency_p95_ms=median("latency_p95_ms"),
        latency_p99_ms=median("latency_p99_ms"),
        peak_rss_mb=max(r.peak_rss_mb for r in runs),
        cpu_s=round(sum(r.cpu_s for r in runs), 2),
        cpu_ms_per_task=median("cpu_ms_per_task", 3),
        errors=sum(r.errors for r in runs),
        notes=[f"run {i}: {n}" if many else n for i, r in enumerate(runs, 1) for n in r.notes],
        throughput_runs=[r.throughput for r in runs],
        cpu_ms_per_task_runs=[r.cpu_ms_per_task for r in runs if r.cpu_ms_per_task is not None],
        latency_p99_ms_runs=[r.latency_p99_ms for r in runs if r.latency_p99_ms is not None],
    )


def workloads(quick: bool) -> list[Workload]:
    """sleep, vision and noop, with their asyncworker concurrency."""
    budget = 3.0 if quick else 12.0
    return [
        Workload("sleep", "bench.sleep", 0.1, 1000, budget),
        # 200: moto's S3 server does ~340 requests/s, two per task, so more would queue there.
        Workload("vision", "bench.vision", 1.02, 200, budget * 1.5),
        Workload("noop", "bench.noop", None, 100, budget),
    ]


class Bench:
    """Runs configurations one after another and collects their results."""

    def __init__(self, quick: bool, scale: float, progress: bool, log_path: Path,
                 tree: baseline.Baseline | None = None,
                 latency_rate: float | None = None, s3_server: str = "",
                 latency_curve: bool = False, publisher: str = "amqp") -> None:
        from celery import Celery

        self.baseline = tree
        #: Publish rate of the latency phase; None: half each row's own throughput.
        self.latency_rate = latency_rate
        self.latency_curve = latency_curve
        self.publisher = publisher  # bench.latency.PUBLISHERS
        #: RabbitMQ's and PostgreSQL's process trees, sampled while latency is measured.
        self.services: dict[str, TreeSampler] | None = None
        #: Seconds of each latency run's start left out (the worker's warm-up).
        self.warmup = min(2.0, 4.0 * scale)
        self.quick = quick
        self.scale = scale
        self.progress = progress
        self.log_path = log_path
        def client(broker: str) -> Any:
            app = Celery("bench-client", broker=broker,
                         backend="db+postgresql+psycopg2://" + DSN.split("://", 1)[1])
            app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)
            return app

        self.amqp_client = client(BROKER)
        self.redis_client = client(REDIS_BROKER)
        #: The current row's Celery client: the producer on its broker.
        self.client = self.amqp_client
        self.config: Config | None = None
        self.db = psycopg2.connect(DSN)
        self.db.autocommit = True
        self.images: list[str] = []
        self.s3_server = s3_server  # servers.s3_server's spec: "" for the default
        self.s3: servers.Server | None = None
        self.gpt: servers.Server | None = None
        #: The current row's queue, publisher and results when it is an asyncio peer's.
        self.peer: Side | None = None

    # -- helpers -----------------------------------------------------------
    def _sql(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.db.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def _reset(self) -> None:
        """An empty queue and an empty celery_taskmeta before each run."""
        with self.client.connection_for_write() as conn:
            channel = conn.default_channel
            channel.queue_declare(QUEUE, durable=True, auto_delete=False)
            channel.queue_purge(QUEUE)
        if self.client is self.redis_client:
            # Messages a stopped worker still held (the database is the bench's own).
            self._redis().delete("unacked", "unacked_index")
        if self._sql("SELECT to_regclass('celery_taskmeta')")[0][0]:
            self._sql("TRUNCATE celery_taskmeta")
        if self.peer:
            self.peer.reset()

    def _done(self) -> int:
        if self.peer:
            return self.peer.done()
        if not self._sql("SELECT to_regclass('celery_taskmeta')")[0][0]:
            return 0
        return int(self._sql("SELECT count(*) FROM celery_taskmeta")[0][0])

    def _failures(self) -> int:
        if self.peer:
            return self.peer.failures()
        return int(self._sql(
            "SELECT count(*) FROM celery_taskmeta WHERE status <> 'SUCCESS'")[0][0])

    def _finished(self) -> list[tuple[str, datetime]]:
        """Each result's task id and completion time (naive UTC), earliest first."""
        if self.peer:
            return self.peer.finished()
        return [(task_id, done) for task_id, done in self._sql(
            "SELECT task_id, date_done FROM celery_taskmeta ORDER BY date_done")]

    def _args(self, workload: Workload, i: int) -> list[Any]:
        return [self.images[i % len(self.images)]] if workload.name == "vision" else []

    def _publish(self, workload: Workload, count: int,
                 rate: float | None = None) -> dict[str, float]:
        """Publish ``count`` tasks (paced at ``rate`` per second); returns id → publish time."""
        if self.peer and self.peer.publishes:
            return self.peer.publish(workload.task, lambda i: self._args(workload, i), count,
                                     rate)
        sent: dict[str, float] = {}
        started = time.monotonic()
        with self.client.producer_or_acquire() as producer:
            for i in range(count):
                if rate:
                    delay = started + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                stamp = time.time()
                result = self.client.send_task(workload.task, self._args(workload, i),
                                               queue=QUEUE, producer=producer)
                sent[result.id] = stamp
        return sent

    def _env(self, config: Config) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNCWORKER_", "BENCH_"))}
        env.update(PYTHONUNBUFFERED="1", BENCH_BROKER_URL=config.broker_url,
                   BENCH_REDIS_URL=peers.REDIS,
                   BENCH_RESULT_BACKEND="db+postgresql+psycopg2://" + DSN.split("://", 1)[1],
                   BENCH_CONCURRENCY=str(config.concurrency), BENCH_GPT_MODEL="gpt-5-bench",
                   ASYNCWORKER_BROKER_URL=config.broker_url, ASYNCWORKER_RESULT_BACKEND=DSN,
                   ASYNCWORKER_WORKER_LOG_LEVEL="WARNING", ASYNCWORKER_WORKER_LOG_FORMAT="json",
                   ASYNCWORKER_GPT_MODEL="gpt-5-bench", ASYNCWORKER_S3_BUCKET=BUCKET)
        key, secret = servers.s3_credentials()
        env.update(ASYNCWORKER_S3_ACCESS_KEY_ID=key, ASYNCWORKER_S3_SECRET_ACCESS_KEY=secret,
                   **dict(zip(servers.S3_KEY_ENV, (key, secret), strict=True)))
        if self.s3 is not None and self.gpt is not None:
            env.update(BENCH_S3_URL=self.s3.url, BENCH_GPT_URL=self.gpt.url,
                       ASYNCWORKER_S3_ENDPOINT_URL=self.s3.url,
                       ASYNCWORKER_GPT_BASE_URL=self.gpt.url)
        if config.tuned:
            env["BENCH_GEVENT_TUNED"] = "1"
        if config.pool == "uvloop":
            env["ASYNCWORKER_WORKER_EVENT_LOOP"] = "uvloop"
        if config.results == "redis":
            env["ASYNCWORKER_RESULT_BACKEND"] = peers.REDIS
        if config.kind == "asyncworker":
            env["PYTHONPATH"] = baseline.python_path(self._source(config)[0], REPO,
                                                     os.environ.get("PYTHONPATH"))
        return env

    def _source(self, config: Config) -> tuple[Path, Path]:
        """The folder put first on an asyncworker worker's path, and the tree it stands for."""
        if not config.baseline:
            return REPO, REPO
        assert self.baseline is not None and self.baseline.commit == config.baseline
        return self.baseline.path, self.baseline.tree

    def check_source(self, config: Config) -> Path:
        """Where ``config``'s worker imports asyncworker from; fails unless from its own tree.

        Same interpreter, flags, environment and folder as the worker, so the same
        ``sys.path``: a comparison that ran one tree's code twice would be worthless.
        """
        found = baseline.imported_from(ASYNCWORKER_PYTHON, self._env(config), REPO)
        expected = baseline.package_init(self._source(config)[1])
        if found != expected:
            raise RuntimeError(f"{config.label}: asyncworker imported from {found}, "
                               f"not {expected}")
        return found

    def _command(self, config: Config, workload: Workload) -> list[str]:
        if config.kind in peers.KINDS:
            return peers.command(config, workload)
        vision = workload.name == "vision"
        if config.kind == "asyncworker":
            app = "bench.vision_app:app" if vision else "bench.apps:app"
            return [*ASYNCWORKER_PYTHON, "-m", "asyncworker", "worker", "-A", app, "-Q", QUEUE,
                    "-c", str(config.concurrency), "--prefetch-multiplier", "4",
                    *(["--processes", str(config.processes)] if config.processes > 1 else [])]
        app = "bench.celery_vision" if vision else "bench.celery_app"
        return [sys.executable, "-m", "celery", "-A", app, "worker", "-P", config.pool,
                "-c", str(config.concurrency), "-Q", QUEUE, "--prefetch-multiplier", "4",
                "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]

    def _bar(self, label: str, done: int, total: int, rate: float) -> None:
        if not self.progress:
            return
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r  {label:<34} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done:>6}/{total:<6} {rate:8.1f}/s ")
        sys.stderr.flush()

    # -- runs ------------------------------------------------------------------
    def run(self, steps: list[tuple[Config, Workload]], repeat: int) -> list[Result]:
        """Every step of a :func:`plan`; one merged row per configuration and workload."""
        if self.baseline:
            for config in dict.fromkeys(c for c, _ in steps if c.kind == "asyncworker"):
                print(f"[source] {config.label}: asyncworker from {self.check_source(config)}",
                      file=sys.stderr)
        runs: dict[tuple[str, str], list[Result]] = {}
        for index, (config, workload) in enumerate(steps, 1):
            same = runs.setdefault((config.label, workload.name), [])
            repeated = repeat > 1 and config.kind == "asyncworker"
            nth = f" (run {len(same) + 1} of {repeat})" if repeated else ""
            print(f"[{index}/{len(steps)}] {config.label} / {workload.name}{nth}", file=sys.stderr)
            same.append(self.run_one(config, workload))
        return [merge(same) for same in runs.values()]

    def run_one(self, config: Config, workload: Workload) -> Result:
        """Both phases for one configuration and workload."""
        result = Result(config.label, config.kind, workload.name, config.concurrency,
                        config.baseline, config.twin_of)
        self.peer = peers.side_for(config)
        self.config = config
        self.client = self.redis_client if config.broker == "redis" else self.amqp_client
        if reason := peers.cannot(config, workload):
            result.cannot = reason
            return result
        if workload.service_time:
            result.littles_law_ideal = round(config.concurrency / workload.service_time, 1)
        budget = workload.budget * max(self.scale, 0.05)
        estimate = result.littles_law_ideal or (4000.0 if config.kind == "asyncworker" else 800.0)
        cap = 5000 if self.quick else 30000
        count = max(10, min(math.ceil(estimate * budget * 1.3), cap))
        self._reset()
        self._publish(workload, count)
        result.tasks_published = count
        with self._worker(config, workload, result) as (process, sampler):
            self._throughput(result, workload, process, sampler, count, budget)
        if self.progress:
            sys.stderr.write("\n")
        if result.tasks_done:
            # A fresh, idle worker for the latency phase: the first one's prefetched
            # backlog went back to the queue when it stopped, and is dropped here.
            self._reset()
            with self._worker(config, workload, result) as (process, sampler):
                if wait_until(lambda: self._consumers() > 0 or process.poll() is not None, 120):
                    self._latency(result, workload, budget, sampler)
                    if self.latency_curve and not self.peer and not config.broker:
                        result.latency_curve = latency.as_dicts(latency.curve(
                            self._sql, BROKER, QUEUE, workload.task, self._arg_lists(workload),
                            result.throughput, self._latency_seconds(budget), self.warmup,
                            "curve", self._watch(sampler), self.publisher))
        return result

    @contextlib.contextmanager
    def _worker(self, config: Config, workload: Workload,
                result: Result) -> Iterator[tuple[subprocess.Popen[bytes], TreeSampler]]:
        """A worker process with a sampler; stopped on exit, its peak RSS kept."""
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {config.label} / {workload.name}\n".encode())
            log.flush()
            process = subprocess.Popen(self._command(config, workload), cwd=REPO,
                                       env=self._env(config), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            sampler = TreeSampler(process.pid).start()
            try:
                yield process, sampler
            finally:
                sampler.stop()
                result.peak_rss_mb = max(result.peak_rss_mb,
                                         round(sampler.peak_rss / 2**20, 1))
                self._stop(process)

    def _redis(self) -> Any:
        import redis

        return redis.Redis.from_url(REDIS_BROKER)

    def _consumers(self) -> int:
        if self.client is self.redis_client:
            # Redis keeps no consumer count: a connection of the database blocked in
            # a pop (Celery's and asyncworker's wait for work) stands for one.
            db = self._redis().connection_pool.connection_kwargs.get("db", 0)
            return sum(1 for c in self._redis().client_list()
                       if c.get("cmd") in ("brpop", "blmpop", "blpop")
                       and str(c.get("db")) == str(db))
        with self.client.connection_for_write() as conn:
            queue = self.peer.queue if self.peer else QUEUE
            return int(conn.default_channel.queue_declare(queue, passive=True).consumer_count)

    def _throughput(self, result: Result, workload: Workload, process: subprocess.Popen[bytes],
                    sampler: TreeSampler, count: int, budget: float) -> None:
        label = f"{result.config} / {workload.name}"
        first_seen = wait_until(lambda: self._done() > 0 or process.poll() is not None, 120)
        if not first_seen or process.poll() is not None:
            result.notes.append(f"worker produced no result (exit {process.poll()})")
            return
        cpu_start = sampler.cpu_seconds()
        deadline = time.monotonic() + budget
        done = 0
        while time.monotonic() < deadline and process.poll() is None:
            done = self._done()
            self._bar(label, done, count, 0.0)
            if done >= count:
                break
            time.sleep(0.2)
        cpu_used = sampler.cpu_seconds() - cpu_start
        done_at = [done for _, done in self._finished()]
        n = len(done_at)
        result.tasks_done = n
        result.errors += self._failures()
        result.throughput = round(steady_rate(done_at), 1)
        result.cpu_s = round(cpu_used, 2)
        result.cpu_ms_per_task = round(cpu_used * 1000 / max(n, 1), 3)
        self._bar(label, int(n), count, result.throughput)
        if n < count:
            result.notes.append(f"time budget ended with {count - n} of {count} tasks left")

    def _arg_lists(self, workload: Workload) -> list[list[Any]]:
        """Every argument list the publisher sends in turn."""
        return [self._args(workload, i) for i in range(max(len(self.images), 1))]

    @staticmethod
    def _latency_seconds(budget: float) -> float:
        return max(budget / 2, 1.0)

    def _watch(self, worker: TreeSampler) -> dict[str, TreeSampler]:
        """The worker's sampler, and RabbitMQ's and PostgreSQL's when they run here."""
        if self.services is None:
            from .processes import listener

            self.services = {}
            for name, url in (("rabbitmq", BROKER), ("postgresql", DSN)):
                with contextlib.suppress(RuntimeError, psutil.Error):
                    self.services[name] = TreeSampler(
                        listener(urlsplit(url).port or 0).pid, 0.5).start()
        return {"worker": worker, **self.services}

    def _latency(self, result: Result, workload: Workload, budget: float,
                 sampler: TreeSampler) -> None:
        rate = self.latency_rate or max(result.throughput * 0.5, 1.0)
        if self.peer or (self.config is not None and self.config.broker):
            self._peer_latency(result, workload, budget, rate)
            return
        point = latency.measure(self._sql, BROKER, QUEUE, workload.task,
                                self._arg_lists(workload), rate, self._latency_seconds(budget),
                                self.warmup, "half", watch=self._watch(sampler),
                                publisher=self.publisher)
        result.latency_rate = round(rate, 1)
        result.errors += self._failures() + point.missing
        result.notes += [f"latency phase: {n}" for n in point.notes]
        result.latency_p50_ms, result.latency_p95_ms, result.latency_p99_ms = \
            point.p50_ms, point.p95_ms, point.p99_ms
        result.latency_point = asdict(point)

    def _peer_latency(self, result: Result, workload: Workload, budget: float,
                      rate: float) -> None:
        """Rows whose results are not in PostgreSQL (the peers, the Redis row) or whose
        broker is not RabbitMQ (the latency publisher speaks AMQP): the bench process
        itself publishes at ``rate`` (through the peer's own client for taskiq) and
        reads each completion where that row stores it."""
        count = max(10, min(int(rate * self._latency_seconds(budget)), 5000))
        result.latency_rate = round(rate, 1)
        sent = self._publish(workload, count, rate)
        wait_until(lambda: self._done() >= count, 60 + count / rate, 0.1)
        result.errors += self._failures()
        latencies = sorted(
            (done.replace(tzinfo=UTC).timestamp() - sent[task_id]) * 1000
            for task_id, done in self._finished() if task_id in sent)
        missing = count - len(latencies)
        if missing:
            result.errors += missing
            result.notes.append(f"{missing} latency-phase tasks had no result")
        if latencies:
            result.latency_p50_ms = round(percentile(latencies, 50), 1)
            result.latency_p95_ms = round(percentile(latencies, 95), 1)
            result.latency_p99_ms = round(percentile(latencies, 99), 1)

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        """Warm shutdown, then kill the whole group if it lingers."""
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        # Celery's prefork children can outlive a killed parent.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    # -- the whole bench ----------------------------------------------------------
    def start_servers(self) -> None:
        """S3 and the model API, and the images the vision tasks read."""
        self.s3 = servers.s3_server(self.s3_server)
        self.gpt = servers.start_fake_openai("--latency", GPT_LATENCY)
        servers.create_bucket(self.s3.url, BUCKET)
        client = servers.s3_client(self.s3.url)
        for i in range(50):
            key = f"images/{i}.png"
            client.put_object(Bucket=BUCKET, Key=key, ContentType="image/png",
                              Body=b"\x89PNG\r\n\x1a\n" + os.urandom(20_000))
            self.images.append(f"s3://{BUCKET}/{key}")

    def stop_servers(self) -> None:
        """Stop S3 and the model API (and the services' samplers)."""
        for sampler in (self.services or {}).values():
            sampler.stop()
        for server in (self.s3, self.gpt):
            if server is not None:
                server.stop()

    def floors(self) -> dict[str, Any]:
        """The raw rates under everything."""
        s3 = (self.s3.url, BUCKET, "images/0.png") if self.s3 else None
        out = asyncio.run(floors.measure(BROKER, DSN, 0.25 if self.quick else 1.0, s3))
        if self.s3:
            out["s3_server"] = self.s3.name
        return out


def steady_rate(done_at: list[datetime]) -> float:
    """Completions per second between the 10th and 90th percentile of completion times.

    Leaves out the ramp-up (connections opening, pools warming) and the tail, so
    one stall at either end does not decide the figure; short runs use every row.
    """
    n = len(done_at)
    if n < 2:
        return 0.0
    lo, hi = (n // 10, n - 1 - n // 10) if n >= 50 else (0, n - 1)
    span = (done_at[hi] - done_at[lo]).total_seconds()
    return (hi - lo) / span if span > 0 else 0.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer configurations, short runs")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every run's time budget (the smoke test uses 0.1)")
    parser.add_argument("--workloads", default=ALL_WORKLOADS)
    parser.add_argument("--configs", default="",
                        help="only configurations whose label contains one of these "
                             "comma-separated strings (e.g. asyncworker,prefork -c 2), or "
                             "whose kind is one (asyncworker, celery), or whose label is "
                             "exactly one written =label; baseline twins follow")
    parser.add_argument("--baseline", default="", metavar="REF",
                        help="also run each noop and sleep asyncworker row with asyncworker "
                             "from this git revision (e.g. HEAD~1), checked out in a "
                             "temporary worktree, and compare")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each asyncworker row N times, interleaved with its baseline "
                             "twin; report medians with the min–max")
    parser.add_argument("--latency-rate", type=float, default=None, metavar="N",
                        help="publish the latency phase at N tasks/s for every row (default: "
                             "half each row's throughput), to compare latencies at one load")
    parser.add_argument("--s3-server", default="", metavar="KIND|URL",
                        help="the S3 server of the vision runs: moto (default), "
                             "moto-keepalive (moto under waitress, if installed: keeps "
                             "connections open as real S3 does), or the URL of one already "
                             f"running, e.g. a local MinIO (keys from ${servers.S3_KEY_ENV[0]} "
                             f"and ${servers.S3_KEY_ENV[1]}); also ${servers.S3_SERVER_ENV}")
    parser.add_argument("--latency-publisher", choices=latency.PUBLISHERS, default="amqp",
                        help="how the latency publisher process sends: prebuilt messages "
                             "over aiormq (default, the least CPU), or Celery's send_task")
    parser.add_argument("--latency-curve", action="store_true",
                        help="also measure latency at 25, 50, 75 and 90%% of each row's "
                             "throughput (a table and <name>-latency.png)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default bench/results)")
    parser.add_argument("--name", default=None, help="file stem (default: full or quick)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.baseline:
        try:
            baseline.resolve(REPO, args.baseline)
        except ValueError as error:
            parser.error(str(error))
    return args


def command_line(args: argparse.Namespace) -> str:
    """The command the report names: every option that changes what is measured."""
    parts = ["python -m bench"]
    if args.quick:
        parts.append("--quick")
    if args.scale != 1.0:
        parts.append(f"--scale {args.scale}")
    if args.workloads != ALL_WORKLOADS:
        parts.append(f"--workloads {args.workloads}")
    if args.configs:
        parts.append(f"--configs {shlex.quote(args.configs)}")
    if args.baseline:
        parts.append(f"--baseline {shlex.quote(args.baseline)}")
    if args.repeat != 1:
        parts.append(f"--repeat {args.repeat}")
    if args.latency_rate:
        parts.append(f"--latency-rate {args.latency_rate:g}")
    s3 = args.s3_server or os.environ.get(servers.S3_SERVER_ENV, "")
    if s3 and s3 != "moto":
        parts.append(f"--s3-server {shlex.quote(s3)}")
    if args.latency_curve:
        parts.append("--latency-curve")
    if args.latency_publisher != "amqp":
        parts.append(f"--latency-publisher {args.latency_publisher}")
    return " ".join(parts)


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM as Ctrl-C: the workers (in sessions of their own) and the worktree are cleaned up."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    args = parse_args(argv)
    out_dir = args.out or REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or ("quick" if args.quick else "full")
    chosen = [w for w in workloads(args.quick) if w.name in args.workloads.split(",")]
    wanted = [s for s in args.configs.split(",") if s]
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(signal.signal, signal.SIGTERM, signal.signal(signal.SIGTERM, _interrupt))
        tree: baseline.Baseline | None = None
        if args.baseline:
            tree = stack.enter_context(baseline.checkout(REPO, args.baseline))
        bench = Bench(args.quick, args.scale, not args.no_progress and sys.stderr.isatty(),
                      out_dir / f"{name}.workers.log", tree, args.latency_rate, args.s3_server,
                      args.latency_curve, args.latency_publisher)
        bench.log_path.write_bytes(b"")
        steps = plan(chosen, args.quick, wanted, tree.commit if tree else "", args.repeat)
        skipped = [w.name for w in chosen if tree and w.name not in BASELINE_WORKLOADS]
        if skipped:
            print(f"[baseline] none for {', '.join(skipped)}: {NO_BASELINE}", file=sys.stderr)
        stack.callback(bench.stop_servers)
        if any(w.name == "vision" for w in chosen):
            bench.start_servers()
        results = bench.run(steps, args.repeat)
        print("[floors] raw broker, database and S3 rates", file=sys.stderr)
        floor = bench.floors()
    for r in results:
        if r.kind == "asyncworker" and not r.baseline and r.workload in skipped:
            r.notes.append(f"no baseline row: {NO_BASELINE}")
    data: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(args),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": machine(DSN),
        "gpt_latency": GPT_LATENCY,
        "floors": floor,
        "results": [asdict(r) for r in results],
    }
    if tree:
        data["baseline"] = {"ref": tree.ref, "commit": tree.commit,
                            "against": report.against(data["results"])}
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    markdown = report.markdown(data) + latency.curve_markdown(data["results"])
    if latency.curve_chart(data["results"], out_dir / f"{name}-latency.png"):
        markdown += f"\n![Latency against load]({name}-latency.png)\n"
    (out_dir / f"{name}.md").write_text(markdown)
    report.chart(data, out_dir / f"{name}.png")
    print(markdown)
    return 0
