"""The chaos suite's tasks for a Celery worker: the same names, arguments and
Redis record as ``tests.apps.chaos`` (see there). ``CHAOS_TRANSPORT_OPTIONS``
(JSON) is its ``broker_transport_options`` (a Redis broker's visibility timeout)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

app = Celery("chaos_celery", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(result_extended=True, worker_hijack_root_logger=False,
                broker_transport_options=json.loads(
                    os.environ.get("CHAOS_TRANSPORT_OPTIONS") or "{}"))

_client = redis.Redis.from_url(os.environ["CHAOS_REDIS_URL"])


def _record_run(task_id: str, key: str, seconds: float) -> str:
    _client.rpush(key, json.dumps([task_id, "start", time.time()]))
    time.sleep(seconds)
    _client.rpush(key, json.dumps([task_id, "done", time.time()]))
    return task_id


@app.task(name="chaos.early", bind=True)
def early(self: Any, key: str, seconds: float) -> str:
    return _record_run(self.request.id, key, seconds)


@app.task(name="chaos.late", bind=True, acks_late=True)
def late(self: Any, key: str, seconds: float) -> str:
    return _record_run(self.request.id, key, seconds)
