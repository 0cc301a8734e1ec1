"""Shared fixtures: real services on loopback, a real Celery client, worker processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
AMQP_PORT = int(os.environ.get("ASYNCWORKER_AMQP_PORT", "5672"))
PG_PORT = int(os.environ.get("ASYNCWORKER_PG_PORT", "5432"))
REDIS_PORT = int(os.environ.get("ASYNCWORKER_REDIS_PORT", "6379"))
BROKER_URL = f"amqp://guest:guest@127.0.0.1:{AMQP_PORT}//"
PG_DSN = f"postgresql://asyncworker:asyncworker@127.0.0.1:{PG_PORT}/asyncworker"
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def result_of(result: Any, timeout: float = 30) -> Any:
    """``result.get()``, after the result is stored.

    Celery's Redis client subscribes without waiting for Redis to confirm, so a
    result stored and published in that gap is missed and ``get()`` hangs (a
    client race, the same with Celery workers). Polling ``ready()`` (a GET)
    first sidesteps it; the value is still read through the client.
    """
    wait_for(result.ready, timeout, interval=0.05, what=f"result of {result.id}")
    return result.get(timeout=timeout)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """RabbitMQ, PostgreSQL and Redis on loopback, started by the project script if down."""
    if not all(_port_open(p) for p in (AMQP_PORT, PG_PORT, REDIS_PORT)):
        subprocess.run([str(REPO / "deploy/local/services.sh"), "start"], check=True)
    return {"broker": BROKER_URL, "postgres": PG_DSN, "redis": REDIS_URL}


def own_vhost(name: str) -> str:
    """The broker URL of RabbitMQ vhost ``name`` (created if missing, guest allowed):
    for tests whose workers must not meet other tests' on the shared queues."""
    ctl = ["bash", str(REPO / "deploy/local/services.sh"), "rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", name], capture_output=True)  # exists: fine
    subprocess.run([*ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    return BROKER_URL.rstrip("/") + "/" + name


@pytest.fixture(scope="session")
def celery_app(services: dict[str, str]) -> Any:
    """A real Celery client: producer and result reader, as a deployment would use."""
    from celery import Celery

    app = Celery("client", broker=BROKER_URL,
                 backend="db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1])
    app.conf.update(result_extended=True, task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True)
    return app


@pytest.fixture
def queue_name() -> str:
    """A queue of this test's own."""
    return f"t.{uuid.uuid4().hex[:10]}"


class WorkerProcess:
    """``python -m asyncworker worker`` (or another subcommand) in a subprocess,
    logging JSON to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path,
                 command: str | None = "worker", *,
                 program: Sequence[str] = (sys.executable, "-m", "asyncworker"),
                 cwd: Path = REPO) -> None:
        """``program`` is how asyncworker is started (another interpreter, a
        console script, a container's whole command line with ``command=None``),
        ``cwd`` where."""
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*program, *([command] if command else []), *args],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[dict[str, Any]]:
        """Parsed JSON log lines so far (non-JSON lines kept as {'raw': text})."""
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"raw": raw})
        return out

    def events(self, event: str) -> list[dict[str, Any]]:
        """Log lines whose event is ``event``."""
        return [line for line in self.lines() if line.get("event") == event]

    def wait_ready(self, timeout: float = 30, event: str = "worker ready") -> None:
        """Wait for the ``event`` line (fail early if the process died)."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited {self.proc.returncode}:\n"
                                     + self.log_path.read_text())
            return bool(self.events(event))
        wait_for(ready, timeout, what=event)

    def signal(self, sig: int) -> None:
        """Send a signal to the worker."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for the process to end; return its exit code."""
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Warm stop, then kill if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_worker(services: dict[str, str],
                 tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start asyncworker processes for a test; all are stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(*args: str, app: str = "tests.apps.compat:app", wait: bool = True,
              command: str = "worker", **settings: Any) -> WorkerProcess:
        worker = WorkerProcess(["-A", app, *args], process_env(**settings),
                               tmp_path / f"{command}-{len(started)}.log", command)
        started.append(worker)
        if wait:
            worker.wait_ready(event="beat started" if command == "beat" else "worker ready")
        return worker

    yield start
    for worker in started:
        worker.stop()


def process_env(**settings: Any) -> dict[str, str]:
    """The environment of an asyncworker subprocess: the test services, JSON logs,
    and ``settings`` as ``ASYNCWORKER_<NAME>`` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCWORKER_")}
    env.update({
        "ASYNCWORKER_BROKER_URL": BROKER_URL,
        "ASYNCWORKER_RESULT_BACKEND": "db+" + PG_DSN,
        "ASYNCWORKER_RESULT_EXTENDED": "true",
        "ASYNCWORKER_WORKER_LOG_FORMAT": "json",
        "ASYNCWORKER_TEST_REDIS_URL": REDIS_URL,
        "PYTHONUNBUFFERED": "1",
    })
    for key, value in settings.items():
        env["ASYNCWORKER_" + key.upper()] = (
            json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    return env


@pytest.fixture(scope="session")
def pg(services: dict[str, str]) -> Iterator[Any]:
    """A psycopg2 connection (autocommit) to the results database."""
    import psycopg2

    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def redis_client(services: dict[str, str]) -> Any:
    """A sync Redis client."""
    import redis

    return redis.Redis.from_url(REDIS_URL)


def task_rows(pg: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    """celery_taskmeta rows for ``ids`` keyed by task id."""
    with pg.cursor() as cur:
        cur.execute("SELECT task_id, status, name, args, kwargs, worker, retries, queue, "
                    "date_done, traceback FROM celery_taskmeta WHERE task_id = ANY(%s)", (ids,))
        cols = [c.name for c in cur.description]
        return {row[0]: dict(zip(cols, row, strict=True)) for row in cur.fetchall()}


@pytest.fixture
def celery_worker(services: dict[str, str], queue_name: str,
                  tmp_path: Path) -> Iterator[str]:
    """A real Celery worker (solo pool) consuming this test's queue; yields the queue."""
    env = dict(os.environ, CELERY_BROKER_URL=BROKER_URL,
               CELERY_RESULT_BACKEND="db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1])
    log = open(tmp_path / "celery.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.apps.celery_worker:app", "worker",
         # A node name of its own: two Celery workers named alike on one broker
         # collide on the mailbox queue.
         "-P", "solo", "-Q", queue_name, "-n", f"cw-{queue_name}@%h", "--without-mingle",
         "--without-gossip", "--without-heartbeat", "-l", "INFO"], cwd=REPO, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    yield queue_name
    proc.terminate()
    proc.wait(30)
    log.close()
