"""Long ETAs against RabbitMQ's ``consumer_timeout``: parked, not held.

A private RabbitMQ with ``consumer_timeout`` = 3 s (checked every second)
stands in for the 30 minutes of a default broker, and the worker's hold limit
is 2 s: a task due in 12 s must run once, on time, with no channel closed,
even when the worker is restarted while the task is parked; a Celery worker
on the same queue gets the parked message back as it was sent and runs it on
time too. A control run with parking off shows that this broker does close
the channel of a worker that holds an ETA message.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from asyncworker.broker import delay
from tests.apps.longeta import record
from tests.conftest import REDIS_URL, REPO, WorkerProcess, wait_for
from tests.private_services import PrivateServices

pytestmark = pytest.mark.integration

TIMEOUT_MS = 3000
HOLD_LIMIT = 2.0
APP = "tests.apps.longeta:app"
CHANNEL_TIMEOUT = "delivery acknowledgement on channel"


@pytest.fixture(scope="module")
def rabbit() -> Iterator[PrivateServices]:
    """A private set whose RabbitMQ closes a channel holding a delivery for 3 s."""
    # Under /tmp with mode 755: its PostgreSQL runs as another user.
    root = Path(tempfile.mkdtemp(prefix="asyncworker-longeta-"))
    root.chmod(0o755)
    services = PrivateServices(root / "services", consumer_timeout_ms=TIMEOUT_MS)
    # RabbitMQ enforces consumer_timeout on each channel tick, every 60 s unless told.
    config = services.state_dir / "rabbitmq" / "advanced.config"
    config.parent.mkdir(parents=True)
    config.write_text("[{rabbit, [{channel_tick_interval, 1000}]}].\n")
    services.start()
    try:
        yield services
    finally:
        services.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def client(rabbit: PrivateServices) -> Any:
    """A real Celery producer on the private broker."""
    from celery import Celery

    app = Celery("longeta_client", broker=rabbit.broker_url)
    app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
    return app


def broker_log(rabbit: PrivateServices) -> str:
    """Everything the private RabbitMQ has logged."""
    return "".join(p.read_text(errors="replace")
                   for p in (rabbit.state_dir / "rabbitmq" / "log").glob("*.log"))


def queue_counts(rabbit: PrivateServices) -> dict[str, tuple[int, int]]:
    """Queue name -> (ready, unacked)."""
    out = rabbit.rabbitmqctl("-q", "list_queues", "name", "messages_ready",
                             "messages_unacknowledged")
    counts = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit():
            counts[parts[0]] = (int(parts[1]), int(parts[2]))
    return counts


def copies(rabbit: PrivateServices, queue: str) -> tuple[int, int]:
    """Messages (ready, unacked) in ``queue`` and its delay queues together."""
    counts = [c for name, c in queue_counts(rabbit).items() if name == queue or (
        name.startswith(delay.PREFIX) and name.endswith("." + queue))]
    return sum(r for r, _ in counts), sum(u for _, u in counts)


def runs(redis_client: Any, key: str) -> list[dict[str, Any]]:
    return [record(raw) for raw in redis_client.lrange(f"longeta:{key}", 0, -1)]


def channel_trouble(worker: WorkerProcess) -> list[str]:
    """Worker log lines about a closed channel or a reconnect (the broker's log is the
    authority: a channel that aio-pika reopens at once may leave no line here)."""
    return [line for line in worker.log_path.read_text(errors="replace").splitlines()
            if "PRECONDITION_FAILED" in line or "reconnect" in line.lower()
            or ("channel" in line.lower() and "closed" in line.lower())]


@pytest.fixture
def start(rabbit: PrivateServices, start_worker: Callable[..., WorkerProcess],
          queue_name: str) -> Callable[..., WorkerProcess]:
    """Start an asyncworker on the private broker, consuming this test's queue."""
    def run(name: str, **settings: Any) -> WorkerProcess:
        settings.setdefault("worker_eta_hold_limit", HOLD_LIMIT)
        return start_worker("-Q", queue_name, "-c", "4", app=APP,
                            broker_url=rabbit.broker_url,
                            worker_nodename=f"{name}-{queue_name}@longeta", **settings)
    return run


def test_parked_task_runs_once_on_time_across_a_restart(
        rabbit: PrivateServices, client: Any, start: Callable[..., WorkerProcess],
        queue_name: str, redis_client: Any) -> None:
    key = uuid.uuid4().hex
    log_before = len(broker_log(rabbit))
    first = start("first")
    sent = client.send_task("longeta.stamp", args=[key], countdown=12, queue=queue_name)
    eta = datetime.fromisoformat(wait_for(lambda: first.events("task parked until its ETA"),
                                          10, what="parked")[0]["eta"])
    first.stop()
    # No worker now: one copy, durable, in a delay queue or (once its TTL is up) back
    # in the task's queue, and nothing unacked.
    assert copies(rabbit, queue_name) == (1, 0)
    # Its TTL up, it is back in the task's queue with no worker running.
    wait_for(lambda: queue_counts(rabbit).get(queue_name) == (1, 0), 15, what="the return")

    second = start("second")
    # Held for its last stretch (under the hold limit), the task shows as scheduled.
    inspect = client.control.inspect(destination=[f"second-{queue_name}@longeta"],
                                     timeout=0.5)
    def scheduled() -> list[Any]:
        return [s for s in (inspect.scheduled() or {}).values() for s in s
                if s["request"]["id"] == sent.id]
    assert wait_for(scheduled, 20, interval=0.2, what="inspect scheduled")[0]["eta"]
    done = wait_for(lambda: runs(redis_client, key), 20, what="the run")
    # Nothing left anywhere that could run it again.
    wait_for(lambda: copies(rabbit, queue_name) == (0, 0), 10, what="no copy left")
    assert len(runs(redis_client, key)) == 1
    ran = done[0]
    assert ran["id"] == sent.id and ran["by"] == "asyncworker"
    assert abs(ran["ran"] - eta.timestamp()) <= 1.0
    assert datetime.fromisoformat(ran["eta"]) == eta
    # Back through the default exchange, straight to the queue it was taken from.
    assert (ran["exchange"], ran["routing_key"]) == ("", queue_name)
    # Received once, then once more after each hop; no channel closed for holding it.
    def count(event: str) -> int:
        return sum(1 for w in (first, second) for e in w.events(event)
                   if e.get("task_id") == sent.id)
    assert count("task received") == count("task parked until its ETA") + 1 >= 2
    assert CHANNEL_TIMEOUT not in broker_log(rabbit)[log_before:]
    assert channel_trouble(first) == [] and channel_trouble(second) == []


def test_inspect_scheduled_lists_a_parked_task_across_a_restart(
        rabbit: PrivateServices, client: Any, start: Callable[..., WorkerProcess],
        queue_name: str, redis_client: Any) -> None:
    """While parked no worker holds it, yet ``celery inspect scheduled`` lists it on
    the node that parked it, from a record in the result backend, also after that
    node restarts; it then runs once, on time."""
    key = uuid.uuid4().hex
    node = f"parker-{queue_name}@longeta"
    first = start("parker")
    # 30 s out: parked in the 16 s bucket, so it is still away after a restart.
    sent = client.send_task("longeta.stamp", args=[key],
                            countdown=30, queue=queue_name)
    parked = wait_for(lambda: first.events("task parked until its ETA"), 10, what="parked")[0]
    inspect = client.control.inspect(destination=[node], timeout=1.0)

    def listed() -> list[Any]:
        return [s for s in (inspect.scheduled() or {}).get(node, [])
                if s["request"]["id"] == sent.id]

    def check(found: list[Any]) -> None:
        assert len(found) == 1
        entry = found[0]
        assert entry["eta"] == parked["eta"]
        assert entry["request"]["name"] == "longeta.stamp"
        assert entry["request"]["args"] == [key]
        assert entry["request"]["kwargs"] == {}
        assert entry["parked"]["delay_queue"] == parked["delay_queue"]

    check(wait_for(listed, 10, interval=0.2, what="listed while parked"))
    # Nothing holds it: it is in the delay queue, not unacked anywhere.
    assert queue_counts(rabbit).get(parked["delay_queue"]) == (1, 0)
    first.stop()
    second = start("parker")  # the same node name, a new process
    check(listed())
    assert queue_counts(rabbit).get(parked["delay_queue"]) == (1, 0)
    done = wait_for(lambda: runs(redis_client, key), 40, what="the run")
    assert abs(done[0]["ran"] - datetime.fromisoformat(parked["eta"]).timestamp()) <= 1.0
    # Run and gone: no longer listed; run once.
    wait_for(lambda: not listed(), 10, what="no longer listed")
    assert len(runs(redis_client, key)) == 1
    assert channel_trouble(second) == []


def test_celery_worker_runs_a_parked_task_on_time(
        rabbit: PrivateServices, client: Any, start: Callable[..., WorkerProcess],
        queue_name: str, redis_client: Any, tmp_path: Path) -> None:
    """Parked by asyncworker, then run by a Celery worker: same id, same ETA header."""
    key = uuid.uuid4().hex
    worker = start("parker")
    sent = client.send_task("longeta.stamp", args=[key], countdown=6, queue=queue_name)
    eta = datetime.fromisoformat(wait_for(lambda: worker.events("task parked until its ETA"),
                                          10, what="parked")[0]["eta"])
    worker.stop()
    env = dict(os.environ, CELERY_BROKER_URL=rabbit.broker_url, TEST_REDIS_URL=REDIS_URL)
    # Threads, not solo: Celery's solo pool had not acked an ETA message 2 s after
    # running it, and this broker's 3 s consumer_timeout then closed its channel.
    with open(tmp_path / "celery.log", "wb") as log:
        celery = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.apps.celery_longeta:app", "worker",
             "-P", "threads", "-c", "1", "-Q", queue_name, "--without-mingle", "--without-gossip",
             "--without-heartbeat", "-l", "INFO"], cwd=REPO, env=env, stdout=log,
            stderr=subprocess.STDOUT)
        try:
            done = wait_for(lambda: runs(redis_client, key), 30, what="Celery's run")
            wait_for(lambda: copies(rabbit, queue_name) == (0, 0), 10, what="no copy left")
        finally:
            celery.send_signal(signal.SIGTERM)
            celery.wait(30)
    assert len(runs(redis_client, key)) == 1
    assert "PRECONDITION_FAILED" not in (tmp_path / "celery.log").read_text()
    ran = done[0]
    assert ran["by"] == "celery" and ran["id"] == sent.id
    assert datetime.fromisoformat(ran["eta"]) == eta
    assert abs(ran["ran"] - eta.timestamp()) <= 1.0


def test_control_holding_an_eta_past_consumer_timeout_loses_the_channel(
        rabbit: PrivateServices, client: Any, start: Callable[..., WorkerProcess],
        queue_name: str, redis_client: Any) -> None:
    """Parking off (``worker_eta_hold_limit`` unset): this broker closes the channel."""
    log_before = len(broker_log(rabbit))
    worker = start("holder", worker_eta_hold_limit="null")
    sent = client.send_task("longeta.stamp", args=[uuid.uuid4().hex], countdown=8,
                            queue=queue_name)
    wait_for(lambda: CHANNEL_TIMEOUT in broker_log(rabbit)[log_before:], 15,
             what="the broker's consumer timeout")
    assert worker.events("task parked until its ETA") == []
    # The broker took the message back and delivered it again.
    wait_for(lambda: len([e for e in worker.events("task received")
                          if e.get("task_id") == sent.id]) == 2, 10, what="the redelivery")


@pytest.fixture(scope="module")
def plain_rabbit() -> Iterator[PrivateServices]:
    """A private set with RabbitMQ's default consumer_timeout (a queue of 10,000
    prefetched messages may wait longer than 3 s on a busy machine)."""
    root = Path(tempfile.mkdtemp(prefix="asyncworker-etapark-"))
    root.chmod(0o755)
    services = PrivateServices(root / "services")
    services.start()
    try:
        yield services
    finally:
        services.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_ten_thousand_far_etas_leave_rss_and_prefetch_flat(
        plain_rabbit: PrivateServices, tmp_path: Path) -> None:
    """10,000 tasks an hour ahead are parked, none held: the worker's RSS and prefetch
    stay flat, and normal tasks sent meanwhile on another queue flow (the full
    100,000 are ``bench/eta_park.py``'s)."""
    from bench.eta_park import scenario

    figures = scenario(plain_rabbit, 10_000, tmp_path, deadline=300)
    print(figures)
    assert figures["parked"] == 10_000 and figures["far_runs"] == 0
    assert figures["rss_growth_mb"] < 50
    assert figures["prefetch_peak"] == figures["prefetch_before"] == 400
    assert figures["unacked_peak"] <= 400 and figures["unacked_after"] == 0
    # Normal tasks did not wait behind the far ones' backlog.
    assert figures["normal_sent"] > 200
    assert figures["normal_latency_max_s"] < figures["park_s"] / 2
