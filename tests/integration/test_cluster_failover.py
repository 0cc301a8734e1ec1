"""A RabbitMQ cluster node dies under a task stream: the worker moves to another node.

Three RabbitMQ nodes on loopback form a private cluster (``RabbitCluster``); the
task queue is a quorum queue (``task_default_queue_type = "quorum"``), replicated
on all three. A real Celery client, given the same failover list and publishing
with confirms, streams ``chaos.late`` tasks (``acks_late``); each run appends
start and done records to a Redis list (``tests/apps/chaos.py``). Mid-stream the
node the worker is connected to is killed with ``kill -9``. The worker must be
consuming from another node within seconds, and every task whose publish was
confirmed must complete exactly once (results in the shared PostgreSQL, runs
counted from the records). A publish that raised is sent again under a new id
(the broker may or may not have it: the old id is not counted).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import GRACE, tally
from tests.conftest import PG_DSN, REDIS_URL, WorkerProcess, process_env, task_rows, wait_for
from tests.private_services import RabbitCluster

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TASKS = 300
TASK_SECONDS = 0.05
PUBLISH_INTERVAL = 0.03  # a stream, not a backlog: the kill meets publishes in flight
CONCURRENCY = 4
# From the kill to the worker consuming on another node ("within seconds").
FAILOVER_DEADLINE = 20.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    # Not under pytest's tmp_path: its directories are private, and RabbitMQ runs as
    # its own user.
    tmp = Path(tempfile.mkdtemp(prefix="asyncworker-cluster-"))
    tmp.chmod(0o755)
    cluster = RabbitCluster(tmp)
    try:
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class Producer(threading.Thread):
    """A Celery client publishing ``TASKS`` tasks with confirms, one every
    ``PUBLISH_INTERVAL``; a publish that raises is retried under a new task id."""

    def __init__(self, urls: list[str], queue: str, key: str) -> None:
        super().__init__(daemon=True)
        from celery import Celery

        self.client = Celery("failover-client", broker=urls)
        self.client.conf.update(
            task_serializer="json", accept_content=["json"],
            broker_connection_retry_on_startup=True, broker_failover_strategy="round-robin",
            broker_transport_options={"confirm_publish": True},
            # The default queue on both sides: Celery declares the queues it creates on
            # demand as classic whatever task_default_queue_type says.
            task_default_queue=queue, task_default_queue_type="quorum")
        self.queue, self.key = queue, key
        self.confirmed: list[str] = []
        self.unconfirmed: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            while len(self.confirmed) < TASKS:
                task_id = str(uuid.uuid4())
                try:
                    # No retry inside Celery: a retried publish would repeat the same id,
                    # possibly twice in the queue, and the count would be the producer's.
                    self.client.send_task("chaos.late", [self.key, TASK_SECONDS],
                                          task_id=task_id, retry=False)
                except Exception as exc:
                    self.unconfirmed.append(task_id)
                    self.errors.append(repr(exc))
                    time.sleep(0.2)
                    continue
                self.confirmed.append(task_id)
                time.sleep(PUBLISH_INTERVAL)
        finally:
            self.client.close()


def _records(redis_client: Any, key: str) -> list[tuple[str, str, float]]:
    return [tuple(json.loads(raw)) for raw in redis_client.lrange(key, 0, -1)]


def _running(records: list[tuple[str, str, float]]) -> bool:
    runs: dict[str, int] = {}
    for task_id, phase, _ in records:
        runs[task_id] = runs.get(task_id, 0) + (1 if phase == "start" else -1)
    return any(n > 0 for n in runs.values())


def _at(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"]).timestamp()


def test_worker_survives_the_loss_of_its_node(cluster: RabbitCluster, pg: Any,
                                              redis_client: Any, tmp_path: Path) -> None:
    queue = f"failover.{uuid.uuid4().hex[:10]}"
    key = f"chaos:{queue}"
    nodename = f"failover-{uuid.uuid4().hex[:6]}@localhost"
    env = process_env(broker_url=";".join(cluster.broker_urls), task_default_queue=queue,
                      task_default_queue_type="quorum", worker_reconnect_max_interval=2.0)
    env["CHAOS_REDIS_URL"] = REDIS_URL
    assert env["ASYNCWORKER_RESULT_BACKEND"] == "db+" + PG_DSN
    worker = WorkerProcess(["-A", "tests.apps.chaos:app", "-c", str(CONCURRENCY),
                            "-n", nodename], env, tmp_path / "worker.log")
    producer = Producer(cluster.broker_urls, queue, key)
    try:
        worker.wait_ready(timeout=60)
        first = wait_for(lambda: cluster.node_of_connection(nodename), 30,
                         what="the worker's connection")
        assert first is cluster.nodes[0]  # the first URL of the list
        producer.start()
        # Strike mid-stream: a third done, tasks running, more being published.
        def mid_stream() -> bool:
            assert len(producer.unconfirmed) < 10, producer.errors[:3]
            records = _records(redis_client, key)
            return sum(p == "done" for _, p, _ in records) >= TASKS // 3 and _running(records)
        wait_for(mid_stream, 60, interval=0.02, what="tasks running")
        killed_at = time.time()
        first.kill_rabbitmq()
        killed_done = time.time()

        moved = wait_for(lambda: [line for line in worker.events(
            "reconnected to broker; unacked messages will be redelivered")
            if f":{first.amqp_port}/" not in line["url"]], FAILOVER_DEADLINE,
            what="the worker to reconnect to another node")
        now_on = wait_for(lambda: cluster.node_of_connection(nodename), 30,
                          what="the worker's connection on a surviving node")
        assert now_on is not first and now_on in cluster.nodes
        failover_s = _at(moved[0]) - killed_at
        first_start_after = min(at for _, phase, at in _records(redis_client, key)
                                if phase == "start" and at > _at(moved[0]) - 0.001)
        assert failover_s < FAILOVER_DEADLINE

        producer.join(timeout=120)
        assert not producer.is_alive(), "the producer did not finish"
        ids = producer.confirmed

        def settled() -> bool:
            rows = task_rows(pg, ids)
            return len(rows) == len(ids) and all(r["status"] == "SUCCESS" for r in rows.values())
        wait_for(settled, 90, interval=0.5, what="every confirmed task's SUCCESS row")
        # Nothing left in the queue, and no late second run (redeliveries settle).
        survivor = cluster.nodes_up()[0]
        wait_for(lambda: f"{queue}\t0" in survivor.rabbitmqctl(
            "-q", "list_queues", "name", "messages"), 30, what="the queue to drain")
        before = redis_client.llen(key)
        time.sleep(2 * GRACE + 1)  # a window for a stray second run to show up
        assert redis_client.llen(key) == before

        statuses = {i: r["status"] for i, r in task_rows(pg, ids).items()}
        outcome = tally("asyncworker", "late", "cluster-node-kill-9", ids, statuses,
                        _records(redis_client, key), killed_at, killed_done, 0.0)
        unconfirmed_runs = [t for t in producer.unconfirmed
                            if sum(1 for i, p, _ in _records(redis_client, key)
                                   if i == t and p == "done") > 1]
        print(f"failover {failover_s:.2f}s (first task start {first_start_after - killed_at:.2f}s"
              f" after the kill); {outcome.summary()}; unconfirmed publishes "
              f"{len(producer.unconfirmed)} {producer.errors[:3]}")
        assert outcome.lost == [], outcome.summary()
        assert outcome.duplicated == [], outcome.summary()
        assert outcome.rerun == [], outcome.summary()
        assert unconfirmed_runs == []
        assert outcome.running, "the kill met no running task: it proved nothing"
    finally:
        worker.stop()
        producer.join(timeout=30)


async def test_connect_skips_a_dead_node_without_a_pause(services: dict[str, str]) -> None:
    from asyncworker.broker.amqp import AmqpBroker
    from tests.conftest import BROKER_URL
    from tests.private_services import free_port

    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    broker = AmqpBroker([dead, BROKER_URL])
    started = time.monotonic()
    await broker.connect()
    try:
        assert broker.node_url() == BROKER_URL
        assert broker.outage.failures == 1
        assert time.monotonic() - started < 5  # no backoff pause before the second node
    finally:
        await broker.close()
    other = free_port()
    alone = AmqpBroker([dead, f"amqp://guest:guest@127.0.0.1:{other}//"])
    with pytest.raises(OSError, match=str(other)):
        await alone.connect(retry=False)  # each node once, then the last error
