"""The benchmark's Celery side: the same task names, as plain synchronous functions.

Configured from the environment the benchmark sets: ``BENCH_BROKER_URL``,
``BENCH_RESULT_BACKEND`` (``db+postgresql+psycopg2://…``) and, for the tuned
gevent run, ``BENCH_GEVENT_TUNED=1`` (thread-safe backend, no broker heartbeat,
psycopg2 made cooperative), as the services notes advise for a fair comparison.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from .apps import SLEEP_SECONDS

TUNED = os.environ.get("BENCH_GEVENT_TUNED") == "1"
if TUNED:
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()

app = Celery("bench", broker=os.environ.get("BENCH_BROKER_URL"),
             backend=os.environ.get("BENCH_RESULT_BACKEND"))
app.conf.update(
    task_default_queue="bench",
    worker_prefetch_multiplier=4,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
if TUNED:
    app.conf.update(result_backend_thread_safe=True, broker_heartbeat=0)


@app.task(name="bench.noop")
def noop() -> None:
    """Nothing: the per-task cost of the worker."""


@app.task(name="bench.sleep")
def sleep() -> None:
    """Wait 100 ms, blocking this pool slot."""
    time.sleep(SLEEP_SECONDS)
