"""A worker started from the command line freezes its start-up heap before it
consumes (``worker_gc_freeze``), and still runs tasks; switched off, it does not."""

from __future__ import annotations

from typing import Any

from tests.conftest import result_of


def test_cli_worker_freezes_its_startup_heap_then_runs_tasks(
        celery_app: Any, start_worker: Any, queue_name: str) -> None:
    worker = start_worker("-Q", queue_name, "-c", "4", worker_log_level="DEBUG")
    frozen = worker.events("start-up heap frozen")
    assert len(frozen) == 1 and frozen[0]["objects"] > 10_000
    ready = worker.events("worker ready")[0]
    assert worker.lines().index(frozen[0]) < worker.lines().index(ready)
    assert result_of(celery_app.send_task("compat.add_async", [2, 3], queue=queue_name)) == 5


def test_cli_worker_leaves_the_heap_alone_when_told(
        start_worker: Any, queue_name: str) -> None:
    worker = start_worker("-Q", queue_name, worker_log_level="DEBUG", worker_gc_freeze="false")
    assert worker.events("worker ready") and not worker.events("start-up heap frozen")
