"""The bench's tasks for aio-celery, which consumes the Celery messages of queue ``bench``.

Results go to Redis, aio-celery's only result backend, in Celery's format
(``celery-task-meta-<id>`` with ``date_done``), which :mod:`bench.peers.driver` reads.
"""

from __future__ import annotations

import asyncio
import os

from aio_celery import Celery

from .. import SLEEP_SECONDS
from . import PREFETCH_MULTIPLIER, REDIS

app = Celery("bench-aio-celery")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    result_backend=REDIS,
    task_default_queue="bench",
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    # Its inspection server binds a port even when disabled: any free one, not 1430.
    inspection_http_server_port=0,
)


@app.task(name="bench.noop")
async def noop() -> None:
    """Nothing: the worker's own cost per task."""


@app.task(name="bench.sleep")
async def sleep() -> None:
    """Wait 100 ms without blocking the loop."""
    await asyncio.sleep(SLEEP_SECONDS)
