"""The Redis result backend, read by a real Celery client on its Redis backend."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import BROKER_URL, REDIS_URL, result_of, wait_for
from tests.integration.test_roundtrip import _plan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_celery(services: dict[str, str]) -> Any:
    from celery import Celery

    app = Celery("redis-client", broker=BROKER_URL, backend=REDIS_URL)
    app.conf.update(result_extended=True, broker_connection_retry_on_startup=True)
    return app


def test_mixed_round_trip_on_redis(redis_celery: Any, start_worker: Any,
                                   queue_name: str) -> None:
    start_worker("-Q", queue_name, "-c", "20", result_backend=REDIS_URL)
    sent = []
    for i in range(140):
        name, args, kwargs, expected = _plan(i)
        sent.append((redis_celery.send_task(name, args, kwargs, queue=queue_name), name,
                     args, kwargs, expected))
    for result, name, args, kwargs, expected in sent:
        if isinstance(expected, BaseException):
            with pytest.raises(type(expected)) as info:
                result_of(result, 60)
            assert info.value.args == expected.args
        else:
            assert result_of(result, 60) == expected
        assert (result.name, result.args, result.kwargs) == (name, args, kwargs)
        assert result.worker.startswith("asyncworker@") and result.queue == queue_name
        assert result.date_done is not None


def test_success_is_never_overwritten_and_keys_expire(redis_celery: Any, start_worker: Any,
                                                      queue_name: str,
                                                      redis_client: Any) -> None:
    worker = start_worker("-Q", queue_name, "-c", "1", result_backend=REDIS_URL,
                          result_expires=600)
    task_id = str(uuid.uuid4())
    first = redis_celery.send_task("compat.add_async", [2, 2], queue=queue_name,
                                   task_id=task_id)
    assert result_of(first) == 4
    # The same id again, now failing (a duplicate delivery): the SUCCESS stays.
    redis_celery.send_task("compat.raise_custom", ["late duplicate"], queue=queue_name,
                           task_id=task_id)
    wait_for(lambda: [x for x in worker.events("task failed") if x["task_id"] == task_id],
             30, what="duplicate ran")
    fresh = redis_celery.AsyncResult(task_id)
    assert result_of(fresh, 5) == 4 and fresh.state == "SUCCESS"
    assert 0 < redis_client.ttl(f"celery-task-meta-{task_id}") <= 600
