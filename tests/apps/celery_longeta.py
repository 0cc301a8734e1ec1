"""``longeta.stamp`` for a real Celery worker (see ``tests/apps/longeta.py``)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

app = Celery("celery_longeta", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(worker_hijack_root_logger=False, task_ignore_result=True)


@app.task(name="longeta.stamp", bind=True)
def stamp(self: Any, key: str) -> float:
    now = time.time()
    redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).rpush(f"longeta:{key}", json.dumps({
        "id": self.request.id, "ran": now, "by": "celery", "eta": self.request.eta}))
    return now
