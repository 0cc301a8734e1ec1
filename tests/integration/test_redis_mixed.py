"""A Celery worker and an asyncworker worker on one Redis queue, fed by a real
Celery client: a queue can move to asyncworker one worker at a time.

Both run the chaos suite's tasks (``tests.apps.chaos`` and its Celery twin:
the same names, each run recorded in Redis), so the test counts runs per task
and per worker: both take tasks, none is lost, none runs twice. Then the
operators' view of the mixed pool over Redis: ``celery inspect ping`` from the
command line, and Flower's worker list, each show both workers.

The shared Redis: database 8 is the broker, 9 the tasks' run records (results
go to the shared PostgreSQL, with the worker's name in ``celery_taskmeta``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import PG_DSN, REPO, WorkerProcess, task_rows, wait_for
from tests.flower import get_json, running_flower

pytestmark = pytest.mark.integration

HOST = "redis://127.0.0.1:" + os.environ.get("ASYNCWORKER_REDIS_PORT", "6379")
BROKER = HOST + "/8"
RECORDS = HOST + "/9"
BACKEND = "db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1]
TASKS = 120


@pytest.fixture
def records() -> Iterator[redis.Redis]:
    db = redis.Redis.from_url(RECORDS)
    yield db
    db.close()


@pytest.fixture
def client(services: dict[str, str]) -> Iterator[Any]:
    from celery import Celery

    app = Celery("mixed-client", broker=BROKER, backend=BACKEND)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True)
    yield app
    app.close()


@pytest.fixture
def mixed_pool(queue_name: str, start_worker: Callable[..., WorkerProcess], tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A Celery prefork worker and an asyncworker worker on ``queue_name``; yields
    their node names (Celery's first)."""
    celery_node, ours = f"celery-{queue_name}@mixed", f"aw-{queue_name}@mixed"
    env = dict(os.environ, CELERY_BROKER_URL=BROKER, CELERY_RESULT_BACKEND=BACKEND,
               CHAOS_REDIS_URL=RECORDS, PYTHONUNBUFFERED="1")
    log_path = tmp_path / "celery.log"
    with open(log_path, "wb") as log:
        celery = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.apps.chaos_celery:app", "worker",
             "-P", "prefork", "-c", "2", "-Q", queue_name, "-n", celery_node,
             "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: " ready." in log_path.read_text(errors="replace")
                 or celery.poll() is not None, 90, what="celery worker ready")
        assert celery.poll() is None, log_path.read_text()
        monkeypatch.setenv("CHAOS_REDIS_URL", RECORDS)  # the asyncworker side's records
        start_worker("-Q", queue_name, "-n", ours, "-c", "4", app="tests.apps.chaos:app",
                     broker_url=BROKER, result_backend="db+" + PG_DSN)
        yield celery_node, ours
    finally:
        celery.terminate()
        try:
            celery.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(celery.pid, 9)
            celery.wait()


def test_celery_and_asyncworker_share_a_queue_nothing_lost_nothing_twice(
        client: Any, mixed_pool: tuple[str, str], queue_name: str, records: redis.Redis,
        pg: Any) -> None:
    key = f"mixed:{queue_name}"
    try:
        ids = [client.send_task("chaos.late", [key, 0.02], queue=queue_name).id
               for _ in range(TASKS)]

        def all_stored() -> bool:
            rows = task_rows(pg, ids)
            return len(rows) == TASKS and all(r["status"] == "SUCCESS" for r in rows.values())

        wait_for(all_stored, 120, interval=0.5, what=f"{TASKS} results")
        runs = [json.loads(raw) for raw in records.lrange(key, 0, -1)]
    finally:
        records.delete(key)
    done = Counter(task_id for task_id, phase, _ in runs if phase == "done")
    assert set(done) == set(ids)
    assert [t for t, n in done.items() if n > 1] == []  # nothing ran twice
    by_worker = Counter(row["worker"] for row in task_rows(pg, ids).values())
    assert set(by_worker) == set(mixed_pool), by_worker  # both took tasks
    assert all(n > 0 for n in by_worker.values()), by_worker
    # Nothing left behind in kombu's structures for this queue.
    broker = redis.Redis.from_url(BROKER)
    assert broker.llen(queue_name) == 0
    assert not [v for v in broker.hvals("unacked") if queue_name.encode() in v]


def test_celery_inspect_ping_and_flower_list_both_workers(
        mixed_pool: tuple[str, str], queue_name: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-b", BROKER, "inspect", "ping", "--timeout", "5",
         "-d", ",".join(mixed_pool)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    for node in mixed_pool:
        assert f"->  {node}: OK" in out.stdout, out.stdout
    assert "2 nodes online." in out.stdout, out.stdout

    with running_flower(BROKER, tmp_path / "flower.log") as flower:
        # Flower's worker list comes from its inspect broadcasts (refresh=1).
        def listed() -> bool:
            return set(mixed_pool) <= set(get_json(f"{flower}/api/workers?refresh=1"))

        wait_for(listed, 30, interval=0.5, what="both workers in flower")
        for node in mixed_pool:
            # Its worker page's queues, from the worker's ``active_queues`` reply.
            worker = get_json(f"{flower}/api/workers?workername={node}")[node]
            assert {q["name"] for q in worker["active_queues"]} == {queue_name}, worker
