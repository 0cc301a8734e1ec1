"""Chaos runs: a fault injected under a steady stream of tasks; lost and duplicated
tasks counted, for asyncworker and for a Celery prefork worker, in both ack modes.

    python -m bench.chaos                    # every fault, both workers, both ack modes
    python -m bench.chaos --workers asyncworker --acks late --faults worker-kill-9
    python -m bench.chaos --broker redis     # Redis as the broker: its own faults

Everything runs against a private RabbitMQ, PostgreSQL and Redis on loopback
(``tests.private_services``), so the faults can kill them. With ``--broker
redis`` the broker is one more private Redis, persisted on every write, and the
faults that apply to it run (each fault names its brokers). The table goes to
``bench/results/chaos.md`` and ``chaos.json`` (``chaos-redis`` for Redis;
``--out`` elsewhere). The tests in ``tests/chaos`` run the same scenarios
through :meth:`Chaos.run`.

One scenario: a real Celery client publishes ``--tasks`` short I/O tasks to a
queue of their own (with publisher confirms); a worker starts and works through
them, ``--concurrency`` at a time; when a fifth are done, at a moment when one
is running, the fault is injected
(a worker that dies is restarted, as a supervisor would); then the run waits
until the queue is empty and nothing moves. Each
task appends ``start`` and ``done`` records with timestamps to a Redis list
(``tests/apps/chaos.py``); Redis is never faulted. Counted:

* lost: sent, but no ``SUCCESS`` row in ``celery_taskmeta``;
* duplicated: the task body completed more than once;
* re-run: the task body started more than once (a run interrupted by the fault
  and run again counts here, and not as duplicated);
* running: tasks that had started by the end of the fault and had not finished
  by its start;
* in flight: those, and tasks that finished less than ``GRACE`` seconds before
  the fault (their result and ack may still have been on the way). A fault can
  only lose or run twice a task in flight;
* dead-lettered: messages in the queue's dead-letter list at the end (Redis: the
  malformed envelopes the fault pushed);
* left in queue: messages still waiting or unacked when the run gave up (a lost
  task among them was not run, rather than dropped).

On Redis a delivered message waits in kombu's ``unacked`` hash until acked; a
killed worker's messages come back once they are older than the
``visibility_timeout``, lowered to :data:`VISIBILITY_TIMEOUT` here so that
happens within the run (Celery's worker also gets ``unacked_restore_interval``
and ``unacked_restore_throttle`` of 1, or it would look only every 100 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import redis

from tests.private_services import REPO, PrivateRedis, PrivateServices

RESULTS = REPO / "bench" / "results"
# A task that ended this long before the fault may not have stored its result or
# been acked yet: it counts as in flight (but not as running).
GRACE = 0.5
# How long the broker stays stopped (stop_app) and PostgreSQL stays down.
BROKER_DOWN_S = 3.0
PG_DOWN_S = 10.0
# Redis broker: seconds before an unacked message goes back to its queue.
VISIBILITY_TIMEOUT = 10
BROKERS = ("amqp", "redis")
DEAD_LETTER_SUFFIX = ".dlq"  # task_dead_letter_suffix's default
REASON_HEADER = "x-asyncworker-reason"


@dataclass
class Outcome:
    """What one scenario did to its tasks (task ids in the lists)."""

    worker: str
    acks: str
    fault: str
    sent: int
    broker: str = "amqp"
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    failed: int = 0
    dead_lettered: int = 0
    #: Each dead letter's ``x-asyncworker-reason`` header ("" where it has none).
    dead_letter_reasons: list[str] = field(default_factory=list)
    left_in_queue: int | None = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The counts, without the id lists."""
        return {"broker": self.broker, "worker": self.worker, "acks": self.acks,
                "fault": self.fault, "sent": self.sent, "lost": len(self.lost),
                "duplicated": len(self.duplicated),
                "rerun": len(self.rerun), "in_flight": len(self.in_flight),
                "running": len(self.running),
                "failed": self.failed, "dead_lettered": self.dead_lettered,
                "left_in_queue": self.left_in_queue,
                "seconds": round(self.seconds, 1)}


def _pg_bin() -> Path:
    return sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                  key=lambda p: int(p.parent.name))[-1]


class RabbitBroker:
    """The private set's RabbitMQ as the broker."""

    name = "amqp"

    def __init__(self, services: PrivateServices) -> None:
        self.services = services
        self.url = services.broker_url
        # Publisher confirms: RabbitMQ only keeps, across its own crash, messages it
        # has confirmed (without them a kill -9 drops a busy queue's unsynced tail,
        # whatever the worker does).
        self.client_options: dict[str, Any] = {"confirm_publish": True}

    def worker_options(self, kind: str) -> dict[str, Any]:
        """``broker_transport_options`` for a ``kind`` worker."""
        return {}

    def queue_messages(self, queue: str) -> int | None:
        """Ready plus unacknowledged messages in ``queue``; None if the broker is away
        or has not recovered the queue yet."""
        try:
            listing = self.services.rabbitmqctl("-q", "list_queues", "name", "messages")
        except subprocess.SubprocessError:
            return None
        for line in listing.splitlines():
            name, _, count = line.partition("\t")
            if name == queue:
                return int(count)
        return None

    def dead_letter_reasons(self, queue: str) -> list[str]:
        return []  # no fault here sends any

    def close(self) -> None:
        pass


class RedisBroker:
    """A private, durable Redis (:class:`PrivateRedis`) as the broker, in kombu's
    layout: a list per queue (and per priority step), delivered messages in the
    ``unacked`` hash until acked."""

    name = "redis"
    #: kombu's default priority steps and separator: a queue's lists are ``queue`` and
    #: ``queue<SEP><step>`` for each step above 0.
    PRIORITY_LISTS = ("", "\x06\x163", "\x06\x166", "\x06\x169")

    def __init__(self, server: PrivateRedis) -> None:
        self.server = server
        self.url = server.url
        self.client_options: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT}
        self.redis = redis.Redis.from_url(server.url, socket_timeout=5)

    def worker_options(self, kind: str) -> dict[str, Any]:
        """``broker_transport_options`` for a ``kind`` worker."""
        options: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT}
        if kind == "celery":
            # Without these kombu sweeps the unacked hash every 100 s only.
            options.update(unacked_restore_interval=1, unacked_restore_throttle=1)
        return options

    def queue_messages(self, queue: str) -> int | None:
        """Waiting plus delivered-and-unacked messages of ``queue``; None while Redis
        is away."""
        try:
            waiting = sum(int(self.redis.llen(queue + suffix))
                          for suffix in self.PRIORITY_LISTS)
            unacked = self.redis.hvals("unacked")
        except redis.RedisError:
            return None
        mine = [raw for raw in unacked if _unacked_queue(raw) in (queue, None)]
        return waiting + len(mine)

    def dead_letter_reasons(self, queue: str) -> list[str]:
        """The reason of each message in ``queue``'s dead-letter list (kombu
        envelopes whose headers carry ``x-asyncworker-reason``)."""
        reasons = []
        for raw in self.redis.lrange(queue + DEAD_LETTER_SUFFIX, 0, -1):
            try:
                reasons.append(str(json.loads(raw)["headers"].get(REASON_HEADER, "")))
            except (ValueError, LookupError, TypeError, AttributeError):
                reasons.append("")
        return reasons

    def push_raw(self, queue: str, payload: bytes) -> None:
        """Put ``payload`` at the head of ``queue``'s line (kombu pushes with LPUSH
        and pops from the right), so it is delivered next."""
        self.redis.rpush(queue, payload)

    def close(self) -> None:
        self.redis.close()


def _unacked_queue(raw: bytes | str) -> str | None:
    """The routing key (the queue, as Celery's client routes) of an ``unacked``
    entry, ``[message, exchange, routing key]``; None if it cannot be read."""
    try:
        return str(json.loads(raw)[2])
    except (ValueError, LookupError, TypeError):
        return None


ChaosBroker = RabbitBroker | RedisBroker


class Worker:
    """An asyncworker or Celery prefork worker in a process group of its own
    (so ``kill -9`` takes the prefork children too, as a container's death does)."""

    def __init__(self, kind: str, queue: str, concurrency: int, services: PrivateServices,
                 logs: Path, broker: ChaosBroker) -> None:
        self.kind, self.queue, self.concurrency = kind, queue, concurrency
        self.services, self.logs, self.broker = services, logs, broker
        self.started = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = logs

    def _command(self) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ASYNCWORKER_", "CELERY_"))}
        env.update(PYTHONUNBUFFERED="1", CHAOS_REDIS_URL=self.services.redis_url)
        name = f"chaos-{self.queue}@localhost"
        options = json.dumps(self.broker.worker_options(self.kind))
        if self.kind == "asyncworker":
            env.update(ASYNCWORKER_BROKER_URL=self.broker.url,
                       ASYNCWORKER_BROKER_TRANSPORT_OPTIONS=options,
                       ASYNCWORKER_RESULT_BACKEND="db+" + self.services.pg_dsn,
                       ASYNCWORKER_WORKER_LOG_FORMAT="json")
            return [sys.executable, "-m", "asyncworker", "worker", "-A", "tests.apps.chaos:app",
                    "-Q", self.queue, "-c", str(self.concurrency), "-n", name], env
        env.update(CELERY_BROKER_URL=self.broker.url, CHAOS_TRANSPORT_OPTIONS=options,
                   CELERY_RESULT_BACKEND="db+postgresql+psycopg2://"
                   + self.services.pg_dsn.split("://", 1)[1])
        return [sys.executable, "-m", "celery", "-A", "tests.apps.chaos_celery:app", "worker",
                "-P", "prefork", "-c", str(self.concurrency), "-Q", self.queue, "-n", name,
                "--without-mingle", "--without-gossip", "--without-heartbeat",
                "-l", "INFO"], env

    def start(self, timeout: float = 90) -> None:
        """Start one more incarnation and wait until it says it is ready."""
        argv, env = self._command()
        self.started += 1
        self.log_path = self.logs / f"{self.kind}-{self.queue}-{self.started}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        marker = "worker ready" if self.kind == "asyncworker" else " ready."
        _wait(lambda: marker in self.log_path.read_text(errors="replace")
              or self._died(), timeout, f"{self.kind} ready")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} exited {self.proc.returncode}: "
                               + self.log_path.read_text(errors="replace")[-3000:])

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill9(self) -> None:
        """``kill -9`` the whole process group."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 60) -> None:
        """SIGTERM (a warm shutdown) and wait; ``kill -9`` whatever is left after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        # Stray prefork children, or a worker that would not stop.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _wait(predicate: Callable[[], Any], timeout: float, what: str,
          interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Run:
    """One scenario in progress: what a fault needs to reach."""

    chaos: Chaos
    worker: Worker
    key: str

    def done_count(self) -> int:
        return sum(1 for _, phase, _ in self.chaos.records(self.key) if phase == "done")

    def ready_to_strike(self, done: int) -> bool:
        """At least ``done`` tasks finished, and one is running right now."""
        runs: dict[str, int] = defaultdict(int)
        finished = 0
        for task_id, phase, _ in self.chaos.records(self.key):
            runs[task_id] += 1 if phase == "start" else -1
            finished += phase == "done"
        return finished >= done and any(n > 0 for n in runs.values())

    def wait_progress(self, tasks: int, timeout: float) -> None:
        """Let ``tasks`` more tasks finish (or ``timeout`` pass): pacing between faults."""
        target = self.done_count() + tasks
        deadline = time.monotonic() + timeout
        while self.done_count() < target and time.monotonic() < deadline:
            time.sleep(0.1)


def _kill_worker(run: Run) -> None:
    run.worker.kill9()


def _restart_worker_after_kill(run: Run) -> None:
    run.worker.start()


def _term_worker(run: Run) -> None:
    run.worker.terminate()


def _kill_rabbit(run: Run) -> None:
    services = run.chaos.services
    pid = int((services.state_dir / "rabbitmq" / "rabbit.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not Path(f"/proc/{pid}").exists(), 30, "RabbitMQ to die")
    services.run("start")


def _redis_broker(run: Run) -> RedisBroker:
    broker = run.chaos.broker
    assert isinstance(broker, RedisBroker), "a Redis fault needs the Redis broker"
    return broker


def _restart_redis(run: Run) -> None:
    server = _redis_broker(run).server
    server.stop()
    server.start()


def _kill_redis(run: Run) -> None:
    server = _redis_broker(run).server
    server.kill9()
    server.start()


#: What :func:`_push_malformed` puts on the queue: not JSON; an envelope whose body
#: is not base64; an envelope with no ``headers`` (so no task name or id).
MALFORMED = (
    b"{not json",
    json.dumps({"body": "%%% not base64 %%%", "content-encoding": "utf-8",
                "content-type": "application/json", "headers": {"task": "chaos.late"},
                "properties": {"body_encoding": "base64", "delivery_tag": "bad-b64",
                               "delivery_info": {"exchange": "", "routing_key": ""},
                               "priority": 0}}).encode(),
    json.dumps({"body": "W1tdLCB7fSwge31d", "content-encoding": "utf-8",
                "content-type": "application/json",
                "properties": {"body_encoding": "base64", "delivery_tag": "no-headers",
                               "delivery_info": {"exchange": "", "routing_key": ""},
                               "priority": 0}}).encode(),
)


def _push_malformed(run: Run) -> None:
    broker = _redis_broker(run)
    for payload in MALFORMED:
        broker.push_raw(run.worker.queue, payload)
    # The fault lasts until the worker has moved past them: the next tasks run.
    run.wait_progress(len(MALFORMED) + run.worker.concurrency * 4, timeout=30)


def _stop_app(run: Run) -> None:
    run.chaos.services.rabbitmqctl("stop_app")
    time.sleep(BROKER_DOWN_S)  # the outage itself, not a wait for anything
    run.chaos.services.rabbitmqctl("start_app")


def _pg_restart(mode: str, times: int) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        for i in range(times):
            run.chaos.pg_ctl("restart", "-m", mode)
            if i < times - 1:
                # Let a few tasks through, so each restart meets tasks in flight.
                run.wait_progress(2, timeout=5)
    return fault


def _pg_down(run: Run) -> None:
    run.chaos.pg_ctl("stop", "-m", "fast")
    time.sleep(PG_DOWN_S)  # the outage itself
    run.chaos.services.run("start")


@dataclass(frozen=True)
class Fault:
    """A fault: ``inject`` is timed as the fault; ``after`` (not timed) brings a dead
    worker back."""

    name: str
    title: str
    inject: Callable[[Run], None]
    after: Callable[[Run], None] | None = None
    brokers: tuple[str, ...] = BROKERS


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("worker-kill-9", "worker `kill -9`, restarted", _kill_worker,
          _restart_worker_after_kill),
    Fault("worker-sigterm", "worker SIGTERM (warm shutdown), restarted", _term_worker,
          _restart_worker_after_kill),
    Fault("rabbitmq-kill-9", "RabbitMQ `kill -9`, restarted", _kill_rabbit,
          brokers=("amqp",)),
    Fault("rabbitmq-stop-app", f"RabbitMQ `stop_app`, {BROKER_DOWN_S:g} s, `start_app`",
          _stop_app, brokers=("amqp",)),
    Fault("redis-restart", "Redis `SHUTDOWN`, started again", _restart_redis,
          brokers=("redis",)),
    Fault("redis-kill-9", "Redis `kill -9` (append-only file, fsync always), restarted",
          _kill_redis, brokers=("redis",)),
    Fault("malformed-envelopes", "malformed envelopes pushed onto the queue's list "
          "(not JSON, bad base64, no headers)", _push_malformed, brokers=("redis",)),
    Fault("pg-restart-fast-x10", "PostgreSQL `restart -m fast` ×10 in a row",
          _pg_restart("fast", 10)),
    Fault("pg-restart-immediate", "PostgreSQL `restart -m immediate`",
          _pg_restart("immediate", 1)),
    Fault("pg-down-10s", f"PostgreSQL down {PG_DOWN_S:g} s", _pg_down),
)}


def faults_for(broker: str) -> list[str]:
    """The faults that apply with ``broker`` (``amqp`` or ``redis``)."""
    return [name for name, spec in FAULTS.items() if broker in spec.brokers]


class Chaos:
    """Scenarios against one private set of services and one broker (the set's
    RabbitMQ, or a private Redis)."""

    def __init__(self, services: PrivateServices, logs: Path,
                 broker: ChaosBroker | None = None) -> None:
        self.services, self.logs = services, logs
        self.broker: ChaosBroker = broker or RabbitBroker(services)
        #: The tasks' run records: the set's own Redis, never faulted.
        self.redis = redis.Redis.from_url(services.redis_url)

    def pg_ctl(self, *args: str) -> None:
        """``pg_ctl ARGS`` on the private cluster, as the postgres user (``restart``
        keeps the options it was started with)."""
        data = self.services.state_dir / "postgres"
        subprocess.run(["runuser", "-u", "postgres", "--", str(_pg_bin() / "pg_ctl"),
                        "-D", str(data), "-l", str(data / "server.log"), "-w", "-t", "60",
                        *args], check=True, capture_output=True, timeout=120)

    def durable_commits(self) -> None:
        """``synchronous_commit = on`` for the project's role. The local servers run
        with it off (for speed), and then ``restart -m immediate`` drops the last
        commits: the database's loss, which would be counted against the worker."""
        subprocess.run(["runuser", "-u", "postgres", "--", str(_pg_bin() / "psql"), "-h", "/tmp",
                        "-p", str(self.services.pg_port), "-U", "postgres", "-qc",
                        "ALTER ROLE asyncworker SET synchronous_commit = on"],
                       check=True, capture_output=True, timeout=60)

    def records(self, key: str) -> list[tuple[str, str, float]]:
        return [tuple(json.loads(raw)) for raw in self.redis.lrange(key, 0, -1)]

    def statuses(self, ids: list[str]) -> dict[str, str] | None:
        """task id → status in ``celery_taskmeta``; None while PostgreSQL is away."""
        try:
            conn = psycopg2.connect(self.services.pg_dsn, connect_timeout=3)
        except psycopg2.Error:
            return None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT task_id, status FROM celery_taskmeta "
                            "WHERE task_id = ANY(%s)", (ids,))
                return dict(cur.fetchall())
        except psycopg2.Error:
            return None  # no table yet, or the server went away
        finally:
            conn.close()

    def publish(self, task: str, queue: str, key: str, tasks: int,
                seconds: float) -> list[str]:
        """Send ``tasks`` tasks from a real Celery client, each confirmed by the broker."""
        from celery import Celery

        client = Celery("chaos-client", broker=self.broker.url)
        client.conf.update(task_serializer="json", accept_content=["json"],
                           broker_connection_retry_on_startup=True,
                           broker_transport_options=self.broker.client_options)
        try:
            return [client.send_task(task, [key, seconds], queue=queue).id
                    for _ in range(tasks)]
        finally:
            client.close()

    def settle(self, queue: str, key: str, ids: list[str], timeout: float) -> dict[str, str]:
        """Wait until the queue is empty and nothing changes between two looks."""
        deadline = time.monotonic() + timeout
        previous: tuple[int, int, int | None] | None = None
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            now = self.statuses(ids)
            if now is not None:
                statuses = now
                snapshot = (sum(s == "SUCCESS" for s in statuses.values()),
                            self.redis.llen(key), self.broker.queue_messages(queue))
                if snapshot[2] == 0 and snapshot == previous:
                    break
                previous = snapshot
            time.sleep(1.0)
        return statuses

    def run(self, kind: str, acks: str, fault: str, tasks: int = 300, concurrency: int = 4,
            seconds: float = 0.05, settle_timeout: float = 120) -> Outcome:
        """One scenario: ``kind`` is ``asyncworker`` or ``celery``, ``acks`` ``early``
        or ``late``, ``fault`` a key of :data:`FAULTS` that applies to the broker."""
        spec = FAULTS[fault]
        if self.broker.name not in spec.brokers:
            raise ValueError(f"fault {fault} does not apply to the {self.broker.name} broker")
        queue = f"chaos.{uuid.uuid4().hex[:10]}"
        key = f"chaos:{queue}"
        worker = Worker(kind, queue, concurrency, self.services, self.logs, self.broker)
        run = Run(self, worker, key)
        begun = time.monotonic()
        # The backlog first, so the fault meets tasks running and tasks waiting.
        ids = self.publish(f"chaos.{acks}", queue, key, tasks, seconds)
        worker.start()
        try:
            # Strike mid-stream: tasks running, more waiting in the queue.
            _wait(lambda: run.ready_to_strike(tasks // 5), 60, "tasks running", interval=0.02)
            fault_start = time.time()
            spec.inject(run)
            fault_end = time.time()
            if spec.after:
                spec.after(run)
            statuses = self.settle(queue, key, ids, settle_timeout)
        finally:
            worker.terminate()
        outcome = tally(kind, acks, fault, ids, statuses, self.records(key),
                        fault_start, fault_end, time.monotonic() - begun)
        outcome.broker = self.broker.name
        outcome.dead_letter_reasons = self.broker.dead_letter_reasons(queue)
        outcome.dead_lettered = len(outcome.dead_letter_reasons)
        outcome.left_in_queue = self.broker.queue_messages(queue)
        return outcome


def tally(kind: str, acks: str, fault: str, ids: list[str], statuses: dict[str, str],
          records: list[tuple[str, str, float]], fault_start: float, fault_end: float,
          seconds: float) -> Outcome:
    """What the fault did to ``ids``, from their result rows and run records."""
    starts: dict[str, list[float]] = defaultdict(list)
    dones: dict[str, list[float]] = defaultdict(list)
    for task_id, phase, at in records:
        (starts if phase == "start" else dones)[task_id].append(at)
    def during(grace: float) -> list[str]:
        return [t for t in ids if starts[t] and min(starts[t]) <= fault_end
                and (not dones[t] or min(dones[t]) >= fault_start - grace)]

    return Outcome(
        worker=kind, acks=acks, fault=fault, sent=len(ids),
        lost=[t for t in ids if statuses.get(t) != "SUCCESS"],
        duplicated=[t for t in ids if len(dones[t]) > 1],
        rerun=[t for t in ids if len(starts[t]) > 1],
        in_flight=during(GRACE), running=during(0.0),
        failed=sum(1 for t in ids if statuses.get(t) == "FAILURE"),
        seconds=seconds)


@contextlib.contextmanager
def private_chaos(broker: str = "amqp") -> Iterator[Chaos]:
    """A private set of services (and for ``broker="redis"`` a private durable Redis
    as the broker), started, with a :class:`Chaos` on it; stopped and removed
    afterwards."""
    if broker not in BROKERS:
        raise ValueError(f"broker must be one of {BROKERS}, not {broker!r}")
    # Not under pytest's tmp_path: its directories are private to their owner, and
    # PostgreSQL runs as another user.
    tmp = Path(tempfile.mkdtemp(prefix="asyncworker-chaos-"))
    tmp.chmod(0o755)
    services = PrivateServices(tmp / "services")
    server = PrivateRedis(tmp / "broker-redis") if broker == "redis" else None
    (tmp / "logs").mkdir()
    chaos: Chaos | None = None
    try:
        services.start()
        if server is not None:
            server.start()
        chaos = Chaos(services, tmp / "logs",
                      RedisBroker(server) if server is not None else None)
        chaos.durable_commits()
        yield chaos
    finally:
        if chaos is not None:
            chaos.broker.close()
        if server is not None:
            server.stop()
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def markdown(outcomes: Sequence[Outcome], command: str, commit: str) -> str:
    """The table: one row per fault and ack mode, asyncworker beside Celery."""
    by_key = {(o.fault, o.acks, o.worker): o for o in outcomes}
    workers = [w for w in ("asyncworker", "celery") if any(o.worker == w for o in outcomes)]
    head = "| fault | acks | " + " | ".join(
        f"{w} lost | {w} dup | {w} re-run | {w} running" for w in workers) + " |"
    brokers = sorted({o.broker for o in outcomes})
    lines = [f"Chaos run at commit {commit}, broker {', '.join(brokers)}: `{command}`", "",
             "lost: no SUCCESS row; dup: completed twice; re-run: started twice "
             "(interrupted, then run again); running: started, not finished, at the fault.",
             "", head, "|" + "---|" * (2 + 4 * len(workers))]
    for name, spec in FAULTS.items():
        for acks in ("early", "late"):
            cells = []
            for w in workers:
                o = by_key.get((name, acks, w))
                cells += ([str(len(o.lost)), str(len(o.duplicated)), str(len(o.rerun)),
                           str(len(o.running))] if o else ["–"] * 4)
            if any(c != "–" for c in cells):
                lines.append(f"| {spec.title} | {acks} | " + " | ".join(cells) + " |")
    sent = sorted({o.sent for o in outcomes})
    lines += ["", f"Tasks per scenario: {', '.join(map(str, sent))}."]
    dead = [f"{o.worker} ({o.acks} ack) {o.dead_lettered}" for o in outcomes
            if o.fault == "malformed-envelopes"]
    if dead:
        lines.append(f"Dead-lettered of the {len(MALFORMED)} malformed envelopes: "
                     + ", ".join(dead) + ".")
    stuck = [f"{o.worker} ({o.fault}, {o.acks} ack) {o.left_in_queue}" for o in outcomes
             if o.left_in_queue]
    if stuck:
        lines.append("Messages still in the queue when the run gave up: "
                     + ", ".join(stuck) + ".")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="asyncworker,celery")
    parser.add_argument("--acks", default="early,late")
    parser.add_argument("--broker", choices=BROKERS, default="amqp")
    parser.add_argument("--faults", default=None,
                        help="comma-separated (default: every fault that applies to --broker)")
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=0.05, help="each task's sleep")
    parser.add_argument("--out", type=Path, default=None,
                        help="writes OUT.md and OUT.json (default bench/results/chaos, "
                             "chaos-redis for --broker redis)")
    args = parser.parse_args(argv)
    known = faults_for(args.broker)
    faults = args.faults.split(",") if args.faults else known
    unknown = set(faults) - set(known)
    if unknown:
        parser.error(f"unknown faults for {args.broker} {sorted(unknown)}; "
                     f"known: {', '.join(known)}")
    out: Path = args.out or RESULTS / ("chaos" if args.broker == "amqp" else "chaos-redis")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    command = "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
    outcomes: list[Outcome] = []
    with private_chaos(args.broker) as chaos:
        for fault in faults:
            for acks in args.acks.split(","):
                for kind in args.workers.split(","):
                    outcome = chaos.run(kind, acks, fault, tasks=args.tasks,
                                        concurrency=args.concurrency, seconds=args.seconds)
                    outcomes.append(outcome)
                    print(json.dumps(outcome.summary()), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(outcomes, command.strip(), commit))
    out.with_suffix(".json").write_text(json.dumps(
        {"commit": commit, "command": command.strip(),
         "outcomes": [asdict(o) for o in outcomes]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
