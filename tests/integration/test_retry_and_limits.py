"""Retries, autoretry backoff and time limits, observed through a real Celery client."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from typing import Any

import pytest
from celery.exceptions import MaxRetriesExceededError, SoftTimeLimitExceeded, TimeLimitExceeded

from tests.conftest import task_rows, wait_for

pytestmark = pytest.mark.integration


def _attempts(redis_client: Any, task_id: str) -> list[tuple[float, int]]:
    return [tuple(json.loads(x)) for x in redis_client.lrange(f"attempts:{task_id}", 0, -1)]


def test_retry_keeps_id_headers_and_counts(celery_app: Any, start_worker: Any,
                                           queue_name: str, redis_client: Any,
                                           pg: Any) -> None:
    worker = start_worker("-Q", queue_name, "-c", "5")
    result = celery_app.send_task("compat.retry_then_succeed", [2], queue=queue_name,
                                  headers={"x-trace": "abc"})
    # Between attempts the client sees RETRY with the reason.
    wait_for(lambda: task_rows(pg, [result.id]).get(result.id, {}).get("status") == "RETRY",
             30, interval=0.02, what="RETRY state")
    assert result.get(timeout=30) == {"retries": 2, "trace": "abc"}
    attempts = _attempts(redis_client, result.id)
    assert [n for _, n in attempts] == [0, 1, 2]
    assert all(b[0] - a[0] >= 0.3 for a, b in itertools.pairwise(attempts))
    assert redis_client.lrange(f"hooks:{result.id}", 0, -1) == [
        b"retry:ValueError:attempt 0", b"retry:ValueError:attempt 1"]
    retried = [x for x in worker.events("task retry scheduled") if x["task_id"] == result.id]
    assert [x["retries"] for x in retried] == [1, 2]
    assert task_rows(pg, [result.id])[result.id]["retries"] == 2


def test_retry_goes_to_the_queue_it_names(celery_app: Any, start_worker: Any,
                                          queue_name: str) -> None:
    other = f"{queue_name}.other"
    start_worker("-Q", f"{queue_name},{other}")
    result = celery_app.send_task("compat.retry_elsewhere", kwargs={"queue": other},
                                  queue=queue_name)
    # As in Celery: self.retry(queue=...) publishes the next attempt there.
    assert result.get(timeout=30) == [queue_name, other]


def test_retries_exhausted(celery_app: Any, start_worker: Any, queue_name: str,
                           redis_client: Any) -> None:
    start_worker("-Q", queue_name, "-c", "5")
    with_exc = celery_app.send_task("compat.retry_forever", [True], queue=queue_name)
    without = celery_app.send_task("compat.retry_forever", [False], queue=queue_name)
    sync = celery_app.send_task("compat.retry_sync", queue=queue_name)
    with pytest.raises(KeyError):
        with_exc.get(timeout=30)
    with pytest.raises(MaxRetriesExceededError):
        without.get(timeout=30)
    assert sync.get(timeout=30) == 1
    assert len(_attempts(redis_client, with_exc.id)) == 3  # first run + max_retries=2


def _countdowns(worker: Any, redis_client: Any, task_id: str) -> list[float]:
    """Each retry's countdown as the worker chose it: its ETA minus the attempt's start."""
    etas = [datetime.fromisoformat(x["eta"]).timestamp()
            for x in worker.events("task retry scheduled") if x["task_id"] == task_id]
    starts = [t for t, _ in _attempts(redis_client, task_id)]
    return [eta - start for eta, start in zip(etas, starts, strict=False)]


def test_autoretry_backoff_follows_celery_formula(celery_app: Any, start_worker: Any,
                                                  queue_name: str, redis_client: Any) -> None:
    worker = start_worker("-Q", queue_name, "-c", "5")
    plain = celery_app.send_task("compat.autoretry", queue=queue_name)
    jitter = celery_app.send_task("compat.autoretry_jitter", queue=queue_name)
    refused = celery_app.send_task("compat.autoretry", [True], queue=queue_name)
    with pytest.raises(ConnectionRefusedError):
        refused.get(timeout=30)
    assert len(_attempts(redis_client, refused.id)) == 1  # dont_autoretry_for
    with pytest.raises(ConnectionError, match="flaky 3"):
        plain.get(timeout=60)
    times = [t for t, _ in _attempts(redis_client, plain.id)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # factor 1, no jitter: countdowns min(4, 1 * 2**n) = 1, 2, 4 seconds...
    countdowns = _countdowns(worker, redis_client, plain.id)
    assert [round(c) for c in countdowns] == [1, 2, 4], countdowns
    assert all(abs(c - round(c)) < 0.5 for c in countdowns), countdowns
    # ...and no retry ran before its countdown was up.
    assert all(gap >= c for gap, c in zip(gaps, [1, 2, 4], strict=True)), gaps
    with pytest.raises(ConnectionError):
        jitter.get(timeout=60)
    # factor 2, max 3, full jitter: each countdown a whole number in [0, min(3, 2 * 2**n)].
    countdowns = _countdowns(worker, redis_client, jitter.id)
    assert len(countdowns) == 4
    for n, countdown in enumerate(countdowns):
        assert 0 <= round(countdown) <= min(3, 2 * 2**n), countdowns
        assert abs(countdown - round(countdown)) < 0.5, countdowns


def test_time_limits_affect_only_their_task(celery_app: Any, start_worker: Any,
                                            queue_name: str) -> None:
    start_worker("-Q", queue_name, "-c", "20")
    siblings = [celery_app.send_task("compat.sleep", [1.5], queue=queue_name)
                for _ in range(5)]
    soft = celery_app.send_task("compat.soft_catch", [10], queue=queue_name)
    hard = celery_app.send_task("compat.hard_limited", [10], queue=queue_name)
    # Limits from the message header ([hard, soft]) override the task's.
    header_hard = celery_app.send_task("compat.sleep", [10], queue=queue_name, time_limit=0.5)
    header_soft = celery_app.send_task("compat.soft_catch", [10], queue=queue_name,
                                       soft_time_limit=0.2)
    uncaught_soft = celery_app.send_task("compat.sleep", [10], queue=queue_name,
                                         soft_time_limit=0.3)
    assert soft.get(timeout=30) == "cleaned up"
    assert header_soft.get(timeout=30) == "cleaned up"
    with pytest.raises(TimeLimitExceeded) as info:
        hard.get(timeout=30)
    assert info.value.args == (0.5,)
    with pytest.raises(TimeLimitExceeded):
        header_hard.get(timeout=30)
    with pytest.raises(SoftTimeLimitExceeded):
        uncaught_soft.get(timeout=30)
    for sibling in siblings:
        span = sibling.get(timeout=30)
        assert span["end"] - span["start"] >= 1.5


def test_thread_task_limits(celery_app: Any, start_worker: Any, queue_name: str) -> None:
    start_worker("-Q", queue_name, "-c", "4")
    busy = celery_app.send_task("compat.busy_sync", [30], queue=queue_name,
                                soft_time_limit=0.3)
    blocking = celery_app.send_task("compat.blocking_sync", [3], queue=queue_name,
                                    time_limit=0.5)
    assert busy.get(timeout=30) == "interrupted"
    with pytest.raises(TimeLimitExceeded):
        blocking.get(timeout=30)


def test_immediate_retries_end_in_failure_not_retry(celery_app: Any, start_worker: Any,
                                                    queue_name: str, pg: Any) -> None:
    """With countdown 0 the next attempt may finish before this one's bookkeeping;
    the final state must still be the last attempt's FAILURE."""
    start_worker("-Q", queue_name, "-c", "20")
    results = [celery_app.send_task("compat.retry_at_once", queue=queue_name)
               for _ in range(20)]
    for result in results:
        with pytest.raises(LookupError, match="attempt 5"):
            result.get(timeout=30)
    rows = task_rows(pg, [r.id for r in results])
    assert {row["status"] for row in rows.values()} == {"FAILURE"}
