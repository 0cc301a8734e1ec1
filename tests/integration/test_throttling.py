"""Rate limits (per worker and global), concurrency caps, and message priority."""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import pytest

from tests.conftest import REDIS_URL, task_rows, wait_for
from tests.integration.test_concurrency import max_overlap

pytestmark = pytest.mark.integration


def _starts(results: list[Any]) -> list[float]:
    return sorted(r.get(timeout=120, interval=0.05)["start"] for r in results)


def test_rate_limit_10_per_second(celery_app: Any, start_worker: Any, queue_name: str) -> None:
    worker = start_worker("-Q", queue_name, "-c", "50")
    limited = [celery_app.send_task("compat.limited", [str(i)], queue=queue_name)
               for i in range(100)]
    # Other tasks are not held up by the throttled ones (no slot is taken while waiting).
    free = celery_app.send_task("compat.add_async", [1, 1], queue=queue_name)
    assert free.get(timeout=10) == 2
    starts = _starts(limited)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    observed = (len(starts) - 1) / (starts[-1] - starts[0])
    assert min(gaps) >= 0.09, min(gaps)
    assert 9.0 <= observed <= 10.5, observed
    assert worker.proc.poll() is None


def test_global_rate_limit_across_two_workers(celery_app: Any, start_worker: Any,
                                              queue_name: str) -> None:
    limits = {"compat.stamp": "10/s"}
    workers = [start_worker("-Q", queue_name, "-c", "20", "-n", f"w{i}-{queue_name}@test",
                            worker_global_rate_limits=limits,
                            worker_rate_limit_redis_url=REDIS_URL) for i in range(2)]
    results = [celery_app.send_task("compat.stamp", [str(i)], queue=queue_name)
               for i in range(40)]
    starts = _starts(results)
    observed = (len(starts) - 1) / (starts[-1] - starts[0])
    assert observed <= 10.5, observed  # one shared budget, not 10/s each
    # Starts are recorded in two processes, so single gaps jitter by a few ms.
    assert statistics.median(b - a for a, b in itertools.pairwise(starts)) >= 0.09
    ran_on = {r.worker for r in results}
    assert len(ran_on) == 2, ran_on
    assert all(w.proc.poll() is None for w in workers)


def test_task_and_queue_concurrency_caps(celery_app: Any, start_worker: Any,
                                         queue_name: str) -> None:
    other = f"{queue_name}.other"
    start_worker("-Q", f"{queue_name},{other}", "-c", "30",
                 worker_task_concurrency={"compat.capped": 3},
                 worker_queue_concurrency={other: 2})
    capped = [celery_app.send_task("compat.capped", [0.3], queue=queue_name)
              for _ in range(12)]
    on_other = [celery_app.send_task("compat.sleep", [0.3], queue=other) for _ in range(8)]
    free = [celery_app.send_task("compat.sleep", [0.3], queue=queue_name) for _ in range(10)]

    def spans(results: list[Any]) -> list[tuple[float, float]]:
        return [(x["start"], x["end"]) for x in (r.get(timeout=60) for r in results)]
    assert max_overlap(spans(capped)) == 3
    assert max_overlap(spans(on_other)) == 2
    assert max_overlap(spans(free)) == 10


def test_priority_queue_serves_high_priority_first(celery_app: Any, start_worker: Any,
                                                   queue_name: str, pg: Any) -> None:
    from kombu import Exchange, Queue

    arguments = {"x-max-priority": 10}
    queue = Queue(queue_name, Exchange(queue_name), routing_key=queue_name,
                  queue_arguments=arguments)
    start_worker("-Q", queue_name, "-c", "1", "--prefetch-multiplier", "1", task_queues={
        queue_name: {"exchange": queue_name, "routing_key": queue_name,
                     "queue_arguments": arguments}})
    # A late-ack task fills the one prefetch slot; the rest wait in the queue.
    blocker = celery_app.send_task("compat.sleep_late", [1.0], queue=queue)
    wait_for(lambda: task_rows(pg, [blocker.id]).get(blocker.id, {}).get("status")
             == "STARTED", 30, interval=0.02, what="blocker started")
    low = [celery_app.send_task("compat.stamp", [f"low{i}"], queue=queue, priority=0)
           for i in range(10)]
    high = [celery_app.send_task("compat.stamp", [f"high{i}"], queue=queue, priority=9)
            for i in range(5)]
    low_starts, high_starts = _starts(low), _starts(high)
    assert max(high_starts) < min(low_starts)
