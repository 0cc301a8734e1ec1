"""Tasks for the long-ETA tests: each run appends a record to a Redis list.

The record says when it ran, with which ETA, and on which worker kind, so a
test can count runs and check their timing. ``tests/apps/celery_longeta.py``
defines the same task for a real Celery worker.
"""

from __future__ import annotations

import json
import time
from typing import Any

from asyncworker import App, Task
from tests.apps.clients import lazy_redis

app = App("longeta")

_redis = lazy_redis("ASYNCWORKER_TEST_REDIS_URL")


@app.task(name="longeta.stamp", bind=True)
async def stamp(self: Task, key: str) -> float:
    """Record this run under ``longeta:<key>``."""
    now = time.time()
    eta = self.request.eta
    await _redis().rpush(f"longeta:{key}", json.dumps({
        "id": self.request.id, "ran": now, "by": "asyncworker",
        "eta": eta.isoformat() if eta is not None else None,
        "exchange": self.request.delivery_info.get("exchange"),
        "routing_key": self.request.delivery_info.get("routing_key")}))
    return now


@app.task(name="longeta.quick", ignore_result=True)
async def quick(key: str, sent: float) -> None:
    """A normal task: counts itself under ``longeta:<key>.count`` and records the
    seconds from ``sent`` to its run under ``longeta:<key>.latency``."""
    client = _redis()
    await client.rpush(f"longeta:{key}.latency", time.time() - sent)
    await client.incr(f"longeta:{key}.count")


def record(raw: bytes | str) -> dict[str, Any]:
    """One record of ``stamp``, parsed."""
    value: dict[str, Any] = json.loads(raw)
    return value
