"""Revocation through Celery's own app.control, persisted across worker restarts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from celery.exceptions import TaskRevokedError

from tests.conftest import task_rows, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["postgresql", "redis"])
def test_revoked_task_never_starts_even_after_restart(
        celery_app: Any, start_worker: Any, queue_name: str, backend: str) -> None:
    from tests.conftest import REDIS_URL

    settings = {"result_backend": REDIS_URL} if backend == "redis" else {}
    node = f"rv-{queue_name}@test"
    first = start_worker("-Q", queue_name, "-c", "1", "-n", node, **settings)
    replies = celery_app.control.revoke(str(uuid.uuid4()), reply=True, destination=[node],
                                        timeout=5)
    assert replies and "flagged as revoked" in replies[0][node]["ok"]

    later_id = str(uuid.uuid4())
    # The reply comes after the id is persisted.
    assert celery_app.control.revoke(later_id, reply=True, destination=[node], timeout=5)
    first.stop()
    # A new process learns the revoked id from the result backend.
    second = start_worker("-Q", queue_name, "-c", "1", "-n", node, **settings)
    if backend == "redis":
        from celery import Celery

        reader = Celery("r", broker=celery_app.conf.broker_url, backend=REDIS_URL)
        result = reader.send_task("compat.add_async", [1, 1], queue=queue_name,
                                  task_id=later_id)
    else:
        result = celery_app.send_task("compat.add_async", [1, 1], queue=queue_name,
                                      task_id=later_id)
    with pytest.raises(TaskRevokedError, match="revoked"):
        result.get(timeout=30)
    # The revoke stored the REVOKED state already: the worker may log its refusal later.
    wait_for(lambda: [x["task_id"] for x in second.events("task revoked")] == [later_id], 30,
             what="the second worker to refuse the revoked task")


def test_revoke_waiting_and_terminate_running(celery_app: Any, start_worker: Any,
                                              queue_name: str, pg: Any) -> None:
    node = f"rt-{queue_name}@test"
    start_worker("-Q", queue_name, "-c", "2", "-n", node)
    running = celery_app.send_task("compat.sleep_early", [30], queue=queue_name)
    sibling = celery_app.send_task("compat.sleep", [1.0], queue=queue_name)
    waiting = celery_app.send_task("compat.add_async", [1, 1], queue=queue_name)
    wait_for(lambda: task_rows(pg, [running.id]).get(running.id, {}).get("status")
             == "STARTED", 30, interval=0.02, what="running")
    celery_app.control.revoke(waiting.id)
    reply = celery_app.control.revoke(running.id, terminate=True, reply=True,
                                      destination=[node], timeout=5)
    assert reply[0][node] == {"ok": f"terminate: {running.id}"}
    with pytest.raises(TaskRevokedError, match="terminated"):
        running.get(timeout=30)
    with pytest.raises(TaskRevokedError, match="revoked"):
        waiting.get(timeout=30)
    assert sibling.get(timeout=30)["end"] > 0


def test_ping(celery_app: Any, start_worker: Any, queue_name: str) -> None:
    node = f"ping-{queue_name}@test"
    start_worker("-Q", queue_name, "-n", node)
    assert celery_app.control.ping(destination=[node], timeout=5) == [{node: {"ok": "pong"}}]


def test_duplicate_node_name_still_runs_tasks(celery_app: Any, start_worker: Any,
                                              queue_name: str) -> None:
    node = f"dup-{queue_name}@test"
    start_worker("-Q", queue_name, "-n", node)
    second = start_worker("-Q", f"{queue_name}.2", "-n", node)
    assert any("remote control disabled" in x.get("event", "") for x in second.lines())
    result = celery_app.send_task("compat.add_async", [3, 4], queue=f"{queue_name}.2")
    assert result.get(timeout=30) == 7
