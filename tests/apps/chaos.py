"""The chaos suite's tasks, for an asyncworker worker (``tests.apps.chaos_celery`` is
the same pair for a Celery worker).

Each run appends ``[task id, "start" | "done", time]`` to the Redis list named by
its first argument, before and after a short sleep: the record the suite counts
executions from. Redis is outside the faults the suite injects, so the record
survives them. ``chaos.early`` acks when it starts (Celery's default);
``chaos.late`` acks after its result is stored (``acks_late``).
"""

from __future__ import annotations

import asyncio
import json
import time

from asyncworker import App, Task
from tests.apps.clients import lazy_redis

app = App("chaos")

_redis = lazy_redis("CHAOS_REDIS_URL")


async def _record_run(task_id: str, key: str, seconds: float) -> str:
    await _redis().rpush(key, json.dumps([task_id, "start", time.time()]))
    await asyncio.sleep(seconds)
    await _redis().rpush(key, json.dumps([task_id, "done", time.time()]))
    return task_id


@app.task(name="chaos.early", bind=True)
async def early(self: Task, key: str, seconds: float) -> str:
    return await _record_run(self.request.id, key, seconds)


@app.task(name="chaos.late", bind=True, acks_late=True)
async def late(self: Task, key: str, seconds: float) -> str:
    return await _record_run(self.request.id, key, seconds)
