"""ETA tasks do not block ready ones and start on time; expired tasks end REVOKED."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery.exceptions import TaskRevokedError

pytestmark = pytest.mark.integration


def test_1000_eta_tasks_and_200_ready_with_c10(celery_app: Any, start_worker: Any,
                                               queue_name: str) -> None:
    start_worker("-Q", queue_name, "-c", "10")
    eta = datetime.now(UTC) + timedelta(seconds=8)
    held = [celery_app.send_task("compat.stamp", [f"eta{i}"], queue=queue_name, eta=eta)
            for i in range(1000)]
    ready = [celery_app.send_task("compat.stamp", [f"ready{i}"], queue=queue_name)
             for i in range(200)]
    assert datetime.now(UTC) < eta, "publishing took too long for this test"
    ready_starts = [r.get(timeout=60, interval=0.05)["start"] for r in ready]
    eta_starts = [r.get(timeout=60, interval=0.05)["start"] for r in held]
    # The prefetch window was not eaten by held messages: ready ones all ran first.
    assert max(ready_starts) < min(eta_starts)
    assert max(ready_starts) < eta.timestamp()
    lags = sorted(start - eta.timestamp() for start in eta_starts)
    assert lags[0] >= 0, "an ETA task started early"
    assert lags[0] < 0.1, f"first ETA task started {lags[0]:.3f}s late"
    print(f"ETA lag: first {lags[0] * 1000:.1f} ms, median "
          f"{statistics.median(lags) * 1000:.1f} ms, last {lags[-1] * 1000:.1f} ms")


def test_expired_tasks_end_revoked(celery_app: Any, start_worker: Any, queue_name: str,
                                   pg: Any) -> None:
    worker = start_worker("-Q", queue_name, "-c", "1")
    blocker = celery_app.send_task("compat.sleep", [2.0], queue=queue_name)
    # Prefetched while the only slot is busy, expired by the time it could start.
    expiring = celery_app.send_task("compat.add_async", [1, 1], queue=queue_name, expires=1)
    fine = celery_app.send_task("compat.add_async", [2, 2], queue=queue_name, expires=60)
    blocker.get(timeout=30)
    with pytest.raises(TaskRevokedError, match="expired"):
        expiring.get(timeout=30)
    assert fine.get(timeout=30) == 4
    assert [x["task_id"] for x in worker.events("task revoked")] == [expiring.id]
