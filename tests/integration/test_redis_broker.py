"""asyncworker on ``redis://``, served by a real Celery 5 client on the shared Redis.

Database 5 is the broker of most tests, 6 holds results and the tasks' own
keys, and 7 is the broker of the visibility tests: every worker on one
database must use the same ``visibility_timeout`` (a worker with a short one
would restore the messages another holds), so those get a database of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.conftest import REPO, WorkerProcess, process_env, result_of, wait_for

pytestmark = pytest.mark.integration

HOST = "redis://127.0.0.1:" + os.environ.get("ASYNCWORKER_REDIS_PORT", "6379")
BROKER = HOST + "/5"
RESULTS = HOST + "/6"
VISIBILITY_BROKER = HOST + "/7"
VISIBILITY = {"visibility_timeout": 4, "unacked_restore_interval": 1}


def celery_client(broker: str) -> Any:
    from celery import Celery

    app = Celery("redis-client", broker=broker, backend=RESULTS)
    app.conf.update(task_serializer="json", accept_content=["json"], result_extended=True,
                    broker_connection_retry_on_startup=True)
    if broker == VISIBILITY_BROKER:
        app.conf.broker_transport_options = dict(VISIBILITY)
    return app


@pytest.fixture
def client() -> Iterator[Any]:
    app = celery_client(BROKER)
    yield app
    app.close()


@pytest.fixture
def results_db() -> redis.Redis:
    return redis.Redis.from_url(RESULTS)


@pytest.fixture
def start_redis_worker(start_worker: Callable[..., WorkerProcess],
                       queue_name: str) -> Callable[..., WorkerProcess]:
    """An asyncworker worker consuming this test's queue over Redis."""
    def start(*args: str, broker: str = BROKER, name: str = "a", **settings: Any) -> WorkerProcess:
        options = settings.pop("broker_transport_options", {})
        if broker == VISIBILITY_BROKER:
            options = {**VISIBILITY, **options}
        return start_worker("-Q", queue_name, "-n", f"{name}-{queue_name}@redis", *args,
                            broker_url=broker, result_backend=RESULTS,
                            test_redis_url=RESULTS, broker_transport_options=options,
                            **settings)
    return start


def _run(app: Any, task: str, queue: str, *args: Any, **options: Any) -> Any:
    return app.send_task(task, args=args, queue=queue, **options)


def test_priorities_and_countdowns_from_a_celery_client(
        client: Any, start_redis_worker: Callable[..., WorkerProcess], queue_name: str) -> None:
    # Everything is queued before the worker starts, so the order it takes them
    # in is the broker's: kombu's priority lists, step 0 first (as Celery on Redis).
    priorities = [9, 0, 6, 3, 9, 0, 3, 6, 0, 9, 6, 3]
    sent = [(p, _run(client, "compat.sleep", queue_name, 0, priority=p)) for p in priorities]
    published = time.time()
    later = [_run(client, "compat.sleep", queue_name, 0, countdown=3, priority=0)
             for _ in range(2)]
    start_redis_worker(worker_concurrency=1, worker_prefetch_multiplier=1)
    started = sorted((result_of(r)["start"], p) for p, r in sent)
    order = [p for _, p in started]
    assert order == sorted(priorities), f"run in priority order {order}"
    for r in later:
        assert result_of(r)["start"] >= published + 2.5  # held until its ETA
    # All settled: nothing of this queue is left unacked or queued.
    db = redis.Redis.from_url(BROKER)
    assert not [v for v in db.hvals("unacked") if queue_name.encode() in v]
    assert not db.keys(queue_name + "*")


def test_retry_chain_and_chord_over_redis(
        client: Any, start_redis_worker: Callable[..., WorkerProcess], queue_name: str) -> None:
    from celery import chain, chord

    start_redis_worker()
    retried = _run(client, "compat.retry_then_succeed", queue_name, 2)
    assert result_of(retried)["retries"] == 2

    def sig(name: str, *args: Any) -> Any:
        return client.signature(name, args=args, queue=queue_name)

    assert result_of(chain(sig("compat.add_async", 1, 2), sig("compat.mul", 10))()) == 30
    header = [sig("compat.add_async", i, i) for i in range(4)]
    assert result_of(chord(header)(sig("compat.tsum"))) == 12


def test_inspect_ping_over_redis(client: Any, start_redis_worker: Callable[..., WorkerProcess],
                                 queue_name: str) -> None:
    worker = start_redis_worker()
    node = f"a-{queue_name}@redis"
    replies = wait_for(lambda: client.control.inspect(destination=[node], timeout=2).ping(),
                       30, what="ping reply")
    assert replies == {node: {"ok": "pong"}}
    # The celery command line, as an operator would run it.
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-b", BROKER, "inspect", "ping", "-d", node,
         "--timeout", "5"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "pong" in out.stdout, out.stdout + out.stderr
    # asyncworker's own probe, through the broker interface.
    probe = subprocess.run(
        [sys.executable, "-m", "asyncworker", "ping", "-A", "tests.apps.compat:app", "-n", node,
         "--timeout", "10"], cwd=REPO, capture_output=True, text=True, timeout=60,
        env=process_env(broker_url=BROKER, result_backend=RESULTS))
    assert probe.returncode == 0 and "pong" in probe.stdout, probe.stdout + probe.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "asyncworker", "ping", "-A", "tests.apps.compat:app", "-n",
         "nobody@nowhere", "--timeout", "2"], cwd=REPO, capture_output=True, text=True,
        timeout=60, env=process_env(broker_url=BROKER, result_backend=RESULTS))
    assert missing.returncode == 1 and "no reply" in missing.stderr
    assert worker.proc.poll() is None


def test_bad_input_is_dead_lettered_and_the_next_message_runs(
        client: Any, start_redis_worker: Callable[..., WorkerProcess], queue_name: str) -> None:
    db = redis.Redis.from_url(BROKER)
    start_redis_worker()
    db.lpush(queue_name, b"\xff{not an envelope")
    unknown = _run(client, "no.such.task", queue_name)
    good = _run(client, "compat.add_async", queue_name, 20, 22)
    assert result_of(good) == 42
    dlq = queue_name + ".dlq"
    wait_for(lambda: db.llen(dlq) == 2, 30, what="two dead letters")
    letters = [json.loads(item) for item in db.lrange(dlq, 0, -1)]
    reasons = {letter["headers"].get("x-asyncworker-reason") for letter in letters}
    assert all(reasons) and len(reasons) == 2, reasons
    ids = {letter["headers"].get("id") for letter in letters}
    assert unknown.id in ids
    import base64

    bodies = [base64.b64decode(letter["body"]) for letter in letters]
    assert b"\xff{not an envelope" in bodies  # every byte kept
    # The operator's view: listed with their reasons, and still there afterwards.
    listed = subprocess.run(
        [sys.executable, "-m", "asyncworker", "dlq", "list", queue_name, "-A",
         "tests.apps.compat:app"], cwd=REPO, capture_output=True, text=True, timeout=60,
        env=process_env(broker_url=BROKER, result_backend=RESULTS))
    assert listed.returncode == 0, listed.stderr
    assert "2 dead letter(s)" in listed.stderr and unknown.id in listed.stdout
    assert db.llen(dlq) == 2
    assert not [v for v in db.hvals("unacked") if queue_name.encode() in v]


@pytest.fixture
def visibility_client() -> Iterator[Any]:
    app = celery_client(VISIBILITY_BROKER)
    yield app
    app.close()


def test_kill9_with_acks_late_tasks_restored_after_visibility_timeout(
        visibility_client: Any, start_redis_worker: Callable[..., WorkerProcess],
        queue_name: str, results_db: redis.Redis) -> None:
    first = start_redis_worker(broker=VISIBILITY_BROKER, name="first")
    keys = [f"runs:{queue_name}:{i}" for i in range(5)]
    sent = [_run(visibility_client, "compat.slow_first_time", queue_name, key) for key in keys]
    wait_for(lambda: all(results_db.get(k) == b"1" for k in keys), 30, what="all started")
    first.proc.send_signal(signal.SIGKILL)
    first.wait_exit()
    killed = time.monotonic()
    start_redis_worker(broker=VISIBILITY_BROKER, name="second")
    # Restored once unacked past the timeout (4 s), and run to the end there.
    assert [result_of(r, timeout=60) for r in sent] == [2] * 5
    assert time.monotonic() - killed < 30


def test_eta_longer_than_visibility_timeout_runs_once(
        visibility_client: Any, start_redis_worker: Callable[..., WorkerProcess],
        queue_name: str, results_db: redis.Redis) -> None:
    # Two workers: the one not holding the message sweeps for abandoned ones.
    start_redis_worker(broker=VISIBILITY_BROKER, name="one")
    start_redis_worker(broker=VISIBILITY_BROKER, name="two")
    tasks = [_run(visibility_client, "compat.count_runs", queue_name, 0, countdown=12)
             for _ in range(3)]  # three times the visibility timeout
    assert [result_of(r, timeout=60) for r in tasks] == [1, 1, 1]
    time.sleep(3)  # a duplicate would have been restored by now
    for r in tasks:
        assert results_db.get(f"runs:{r.id}") == b"1"
    db = redis.Redis.from_url(VISIBILITY_BROKER)
    assert not db.keys(queue_name + "*")


def test_unacked_entries_are_kombus_format_while_a_task_runs(
        client: Any, start_redis_worker: Callable[..., WorkerProcess], queue_name: str) -> None:
    start_redis_worker()
    sent = _run(client, "compat.sleep_late", queue_name, 2)
    db = redis.Redis.from_url(BROKER)

    def entry() -> Any:
        for tag, value in db.hgetall("unacked").items():
            message, exchange, routing_key = json.loads(value)
            if message["headers"].get("id") == sent.id:
                return tag, message, exchange, routing_key
        return None

    tag, message, exchange, routing_key = wait_for(entry, 30, what="unacked entry")
    assert (exchange, routing_key) == ("", queue_name)
    assert message["properties"]["delivery_tag"] == tag.decode()
    assert db.zscore("unacked_index", tag) is not None
    result_of(sent)
    wait_for(lambda: db.hget("unacked", tag) is None, 10, what="ack")
    assert db.zscore("unacked_index", tag) is None


def test_prefetch_window_bounds_what_is_taken(
        client: Any, start_redis_worker: Callable[..., WorkerProcess], queue_name: str) -> None:
    start_redis_worker(worker_concurrency=2, worker_prefetch_multiplier=1)
    sent = [_run(client, "compat.sleep_late", queue_name, 0.4) for _ in range(8)]
    db = redis.Redis.from_url(BROKER)
    seen = []
    while not all(r.ready() for r in sent):
        seen.append(sum(queue_name.encode() in v for v in db.hvals("unacked")))
        time.sleep(0.05)
    assert max(seen) <= 2 and max(seen) >= 1, seen
    assert all(r.successful() for r in sent)


def test_events_and_broadcast_control_over_redis(
        client: Any, start_redis_worker: Callable[..., WorkerProcess], queue_name: str) -> None:
    import threading

    events: list[dict[str, Any]] = []
    ready = threading.Event()
    with client.connection_for_read() as conn:
        receiver = client.events.Receiver(conn, handlers={"*": events.append})
        consume_ready = receiver.on_consume_ready

        def on_ready(*args: Any, **kwargs: Any) -> None:
            consume_ready(*args, **kwargs)
            ready.set()

        receiver.on_consume_ready = on_ready
        thread = threading.Thread(target=receiver.capture, daemon=True)
        thread.start()
        assert ready.wait(15)
        try:
            start_redis_worker("-E")
            node = f"a-{queue_name}@redis"
            revoked_id = str(uuid.uuid4())
            replies = client.control.revoke(revoked_id, reply=True, destination=[node],
                                            timeout=5)
            assert replies and node in replies[0]
            revoked = _run(client, "compat.add_async", queue_name, 1, 1, task_id=revoked_id)
            done = _run(client, "compat.add_async", queue_name, 2, 3)
            assert result_of(done) == 5
            wait_for(lambda: revoked.state == "REVOKED", 30, what="revoked")

            def seen(kind: str, task_id: str | None = None) -> bool:
                return any(e.get("type") == kind and e.get("hostname") == node
                           and (task_id is None or e.get("uuid") == task_id)
                           for e in list(events))

            wait_for(lambda: seen("task-succeeded", done.id), 30, what="task-succeeded")
            wait_for(lambda: seen("worker-heartbeat"), 30, what="a heartbeat")
        finally:
            receiver.should_stop = True
            thread.join(10)


@pytest.fixture
def celery_redis_worker(queue_name: str, tmp_path: Any) -> Iterator[str]:
    """A real Celery worker (solo pool) on Redis consuming this test's queue."""
    env = dict(os.environ, CELERY_BROKER_URL=BROKER, CELERY_RESULT_BACKEND=RESULTS)
    with open(tmp_path / "celery.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.apps.celery_worker:app", "worker",
             "-P", "solo", "-Q", queue_name, "-n", f"cw-{queue_name}@%h", "--without-mingle",
             "--without-gossip", "--without-heartbeat", "-l", "INFO"], cwd=REPO, env=env,
            stdout=log, stderr=subprocess.STDOUT)
        yield queue_name
        proc.terminate()
        proc.wait(30)


async def test_our_producer_reaches_a_celery_worker_on_redis(celery_redis_worker: str) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from asyncworker import App

    producer = App("producer", broker_url=BROKER, result_backend=RESULTS)
    try:
        result = await producer.send_task(
            "celery_side.describe", [1, Decimal("2.5"), datetime(2026, 1, 1, tzinfo=UTC)],
            {"k": "v"}, queue=celery_redis_worker, countdown=0.1, priority=3,
            headers={"x-custom": "kept"})
        info = await result.get(timeout=60, interval=0.1)
        assert info["args"] == [1, Decimal("2.5"), datetime(2026, 1, 1, tzinfo=UTC)]
        assert info["kwargs"] == {"k": "v"}
        assert info["delivery_info"]["routing_key"] == celery_redis_worker
        assert info["eta"] is not None  # the countdown, as Celery reads it
        failing = await producer.send_task("celery_side.fail", ["nope"],
                                           queue=celery_redis_worker)
        with pytest.raises(LookupError, match="nope"):
            await failing.get(timeout=60, interval=0.1)
    finally:
        await producer.close()
    db = redis.Redis.from_url(BROKER)
    assert not [v for v in db.hvals("unacked") if celery_redis_worker.encode() in v]
