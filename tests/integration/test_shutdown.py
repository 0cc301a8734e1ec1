"""Warm and cold shutdown with tasks in flight: no task is lost."""

from __future__ import annotations

import signal
import uuid
from typing import Any

import pytest

from tests.conftest import task_rows, wait_for

pytestmark = pytest.mark.integration


def _states(pg: Any, ids: list[str]) -> dict[str, str]:
    return {tid: row["status"] for tid, row in task_rows(pg, ids).items()}


def test_warm_shutdown_finishes_running_and_requeues_the_rest(
        celery_app: Any, start_worker: Any, queue_name: str, pg: Any) -> None:
    first = start_worker("-Q", queue_name, "-c", "5", worker_shutdown_timeout=60)
    ids = []
    for i in range(30):
        name = "compat.sleep_late" if i % 2 else "compat.sleep_early"
        ids.append(celery_app.send_task(name, [1.5], queue=queue_name).id)
    # Shut down while tasks are running (STARTED rows) and others wait in prefetch.
    wait_for(lambda: list(_states(pg, ids).values()).count("STARTED") >= 5, 30,
             what="tasks started")
    first.signal(signal.SIGTERM)
    assert first.wait_exit(60) == 0
    after_first = _states(pg, ids)
    # Everything that started finished: no STARTED row is left behind.
    assert "STARTED" not in after_first.values()
    finished_by_first = {tid for tid, state in after_first.items() if state == "SUCCESS"}
    assert 5 <= len(finished_by_first) < 30

    second = start_worker("-Q", queue_name, "-c", "30")
    wait_for(lambda: set(_states(pg, ids).values()) == {"SUCCESS"}
             and len(_states(pg, ids)) == 30, 60, what="all tasks done")
    # Tasks the first worker finished were not run again.
    rerun = {line["task_id"] for line in second.events("task received")}
    assert not rerun & finished_by_first
    assert {line["task_id"] for line in first.events("task succeeded")} == finished_by_first


@pytest.mark.parametrize("task", ["compat.slow_first_time", "compat.slow_first_time_early"])
def test_cold_shutdown_requeues_or_republishes_interrupted_tasks(
        celery_app: Any, start_worker: Any, queue_name: str, pg: Any, redis_client: Any,
        task: str) -> None:
    """A task cut off by a cold shutdown runs again on the next worker (late or early ack)."""
    first = start_worker("-Q", queue_name, "-c", "4")
    keys = [f"runs:{uuid.uuid4()}" for _ in range(4)]
    ids = [celery_app.send_task(task, [key], queue=queue_name).id for key in keys]
    wait_for(lambda: list(_states(pg, ids).values()).count("STARTED") == 4, 30,
             what="all four started")
    first.signal(signal.SIGTERM)
    wait_for(lambda: first.events("shutdown requested"), 10, what="warm shutdown")
    first.signal(signal.SIGTERM)  # second signal: cold
    assert first.wait_exit(30) == 0

    start_worker("-Q", queue_name, "-c", "4")
    results = [celery_app.AsyncResult(tid).get(timeout=30) for tid in ids]
    assert results == [2, 2, 2, 2]  # the second run of each returned
    assert [int(redis_client.get(k)) for k in keys] == [2, 2, 2, 2]
