"""Servers restarted under a running worker: no healthy task fails, reconnects back off,
and SIGTERM stops a worker that is waiting for its broker.

PostgreSQL, Redis and RabbitMQ here are a private set (``PrivateServices``),
since the tests restart and stop them; task-run counters live in the shared
Redis, which nobody restarts.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkerProcess, process_env, wait_for
from tests.private_services import PrivateServices, free_port

pytestmark = pytest.mark.integration

PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


@pytest.fixture(scope="module")
def private() -> Iterator[PrivateServices]:
    # Not under pytest's temporary directory: PostgreSQL runs as its own user,
    # which cannot enter that (mode 700) directory.
    state = Path(tempfile.mkdtemp(prefix="asyncworker-restarts-"))
    state.chmod(0o755)
    services = PrivateServices(state / "services")
    services.start()
    yield services
    services.stop()
    shutil.rmtree(state, ignore_errors=True)


def _pg_ctl(services: PrivateServices, *args: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN[-1] / "pg_ctl"), "-D",
                    str(services.state_dir / "postgres"), "-l",
                    str(services.state_dir / "postgres" / "server.log"), "-w", "-t", "60", *args],
                   check=True, capture_output=True, timeout=90)


def _stop_redis(services: PrivateServices) -> None:
    subprocess.run(["redis-cli", "-p", str(services.redis_port), "shutdown", "nosave"],
                   capture_output=True, timeout=30)


def _client(broker_url: str, backend: str | None) -> Any:
    from celery import Celery

    app = Celery("restarts", broker=broker_url, backend=backend)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True)
    return app


def _worker(tmp_path: Path, name: str, *args: str, **settings: Any) -> WorkerProcess:
    return WorkerProcess(["-A", "tests.apps.compat:app", *args], process_env(**settings),
                         tmp_path / f"{name}.log")


def _statuses(pg_dsn: str, ids: list[str]) -> dict[str, str]:
    import psycopg2

    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT task_id, status FROM celery_taskmeta WHERE task_id = ANY(%s)",
                    (ids,))
        return dict(cur.fetchall())


def _queue_depth(broker_url: str, queue: str) -> int:
    """Messages in ``queue`` (0 when it was never declared)."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    with Connection(broker_url) as conn:
        try:
            return int(conn.default_channel.queue_declare(queue, passive=True).message_count)
        except ChannelError:
            return 0


def _metric(port: int, name: str) -> float:
    """One unlabelled sample from the worker's /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exported")


def _runs(redis_client: Any, ids: list[str]) -> list[int]:
    return [int(redis_client.get(f"runs:{tid}") or 0) for tid in ids]


def test_postgres_restarts_never_fail_a_healthy_task(private: PrivateServices, tmp_path: Path,
                                                     redis_client: Any, queue_name: str,
                                                     services: dict[str, str]) -> None:
    """Five ``restart -m fast`` and one ``-m immediate`` during a stream of acks_late
    tasks: every task ends SUCCESS once, none is dead-lettered or run twice."""
    # The private server runs with synchronous_commit=off (fast tests), which
    # loses the last commits on `-m immediate`; the worker asks for durable ones.
    http = free_port()
    worker = _worker(tmp_path, "pg", "-Q", queue_name, "-c", "10", "--http-port", str(http),
                     result_backend="db+" + private.pg_dsn + "?synchronous_commit=on",
                     result_batch_size=20,
                     worker_reconnect_max_interval=1.0)
    try:
        worker.wait_ready()
        client = _client(services["broker"], "db+postgresql+psycopg2://"
                         + private.pg_dsn.split("://", 1)[1])
        ids: list[str] = []
        for mode in ("fast",) * 5 + ("immediate",):
            # A steady stream: tasks keep arriving and finishing across each restart.
            ids += [client.send_task("compat.count_runs", [0.05], queue=queue_name).id
                    for _ in range(40)]
            time.sleep(0.2)  # let the batch get under way: the restart hits in-flight writes
            _pg_ctl(private, "-m", mode, "restart")
        ids += [client.send_task("compat.count_runs", [0.05], queue=queue_name).id
                for _ in range(40)]
        wait_for(lambda: list(_statuses(private.pg_dsn, ids).values()).count("SUCCESS")
                 == len(ids), 50, interval=0.3, what="every task SUCCESS")
        assert set(_statuses(private.pg_dsn, ids).values()) == {"SUCCESS"}
        assert _runs(redis_client, ids) == [1] * len(ids)
        assert _queue_depth(services["broker"], queue_name + ".dlq") == 0
        assert worker.proc.poll() is None
        # The restarts did hit writes, which waited and went through.
        retried = worker.events("result backend unreachable, retrying")
        assert retried, "no restart hit a write"
        assert worker.events("result backend reachable again")
        assert _metric(http, "asyncworker_backend_write_failures_total") >= len(retried)
        assert _metric(http, "asyncworker_backend_reconnects_total") >= 1
        assert not worker.events("result could not be stored")
        assert not [line for line in worker.lines() if "Traceback" in line.get("raw", "")]
    finally:
        worker.stop()
    assert worker.proc.returncode == 0


def test_redis_backend_restart_never_fails_a_healthy_task(private: PrivateServices,
                                                          tmp_path: Path, redis_client: Any,
                                                          queue_name: str,
                                                          services: dict[str, str]) -> None:
    """Tasks that finish while the Redis result backend is down wait for it, then
    store SUCCESS once (the private Redis keeps nothing across a restart, so
    the tasks are sent while it is down)."""
    import redis

    worker = _worker(tmp_path, "redis", "-Q", queue_name, "-c", "10",
                     result_backend=private.redis_url, worker_reconnect_max_interval=1.0)
    results = redis.Redis.from_url(private.redis_url)
    try:
        worker.wait_ready()
        client = _client(services["broker"], None)  # producer only: results read below
        _stop_redis(private)
        try:
            ids = [client.send_task("compat.count_runs", [0.05], queue=queue_name).id
                   for _ in range(60)]
            wait_for(lambda: worker.events("result backend unreachable, retrying"), 20,
                     what="writes failing")
        finally:
            private.run("start")  # starts what is down (Redis), leaves the others

        def successes() -> int:
            raw = [results.get(f"celery-task-meta-{tid}") for tid in ids]
            return sum(1 for value in raw if value is not None and b'"SUCCESS"' in value)
        wait_for(lambda: successes() == len(ids), 40, interval=0.3, what="every task SUCCESS")
        assert _runs(redis_client, ids) == [1] * len(ids)
        assert _queue_depth(services["broker"], queue_name + ".dlq") == 0
        assert worker.events("result backend reachable again")
        assert not worker.events("result could not be stored")
    finally:
        worker.stop()
        results.close()


def _warnings(worker: WorkerProcess) -> list[dict[str, Any]]:
    return worker.events("broker unreachable, retrying")


def _no_library_noise(worker: WorkerProcess) -> None:
    """Every line is ours (JSON): no aio-pika/aiormq line, no traceback."""
    raw = [line["raw"] for line in worker.lines() if "raw" in line]
    assert raw == [], raw[:5]


def test_worker_without_broker_backs_off_and_stops_on_sigterm(tmp_path: Path,
                                                               queue_name: str,
                                                               services: dict[str, str]) -> None:
    port = free_port()  # nothing listens there
    worker = _worker(tmp_path, "nobroker", "-Q", queue_name,
                     broker_url=f"amqp://guest:secret-pw@127.0.0.1:{port}//",
                     worker_outage_error_after=1.0)
    try:
        wait_for(lambda: len(_warnings(worker)) >= 6, 30, what="six attempts")
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait_exit(10) == 0
        stop_seconds = time.monotonic() - started
    finally:
        worker.stop()
    warnings = _warnings(worker)
    waits = [w["retry_in"] for w in warnings]
    # Growing pauses (jittered, never shorter than the last until the cap).
    assert waits == sorted(waits) and waits[-1] > 4 * waits[0], waits
    assert [w["attempt"] for w in warnings] == list(range(1, len(warnings) + 1))
    assert all("secret-pw" not in line.get("target", "") + line.get("error", "")
               for line in warnings)
    # One ERROR, with the traceback, once the outage passed a second.
    errors = worker.events("broker down for over 1s")
    assert len(errors) == 1 and "Traceback" in errors[0]["exception"]
    assert worker.events("worker stopped before connecting")
    _no_library_noise(worker)
    print(f"stopped {stop_seconds:.2f}s after SIGTERM")


def test_broker_stopped_mid_run_reconnects_and_sigterm_stops_it(
        private: PrivateServices, tmp_path: Path, redis_client: Any, queue_name: str,
        services: dict[str, str]) -> None:
    http = free_port()
    worker = _worker(tmp_path, "midrun", "-Q", queue_name, "-c", "10", "--http-port", str(http),
                     broker_url=private.broker_url, worker_reconnect_max_interval=2.0)
    client = _client(private.broker_url, "db+postgresql+psycopg2://"
                     + services["postgres"].split("://", 1)[1])
    try:
        worker.wait_ready()
        first = [client.send_task("compat.count_runs", [0.0], queue=queue_name).id
                 for _ in range(10)]
        wait_for(lambda: _runs(redis_client, first) == [1] * 10, 20, what="first tasks")
        private.rabbitmqctl("stop_app")
        try:
            wait_for(lambda: len(_warnings(worker)) >= 3, 20, what="reconnect attempts")
        finally:
            private.rabbitmqctl("start_app")
        wait_for(lambda: worker.events("broker reachable again"), 30, what="reconnected")
        client = _client(private.broker_url, None)  # a fresh producer connection
        second = [client.send_task("compat.count_runs", [0.0], queue=queue_name).id
                  for _ in range(10)]
        wait_for(lambda: _runs(redis_client, second) == [1] * 10, 30,
                 what="tasks sent after the reconnect")
        assert worker.events("broker connection lost; reconnecting")
        assert _metric(http, "asyncworker_broker_connect_failures_total") >= 3
        assert _metric(http, "asyncworker_broker_reconnects_total") >= 1
        # Down again, then SIGTERM while it retries: it stops at once.
        seen = len(_warnings(worker))
        private.rabbitmqctl("stop_app")
        try:
            wait_for(lambda: len(_warnings(worker)) > seen, 20, what="retrying again")
            worker.signal(signal.SIGTERM)
            assert worker.wait_exit(10) == 0
        finally:
            private.rabbitmqctl("start_app")
    finally:
        worker.stop()
    _no_library_noise(worker)
    assert _runs(redis_client, first + second) == [1] * 20
