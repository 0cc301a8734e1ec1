"""The asyncio peers in ``python -m bench``: aio-celery and taskiq, beside asyncworker.

Both run the bench's tasks (noop, 100 ms sleep, vision) at asyncworker's
concurrency on the same RabbitMQ, each with its own worker process and the
result store it supports:

- **aio-celery** consumes the very Celery messages the bench publishes (queue
  ``bench``) and stores results in Redis, its only result backend, in Celery's
  key format (``celery-task-meta-<id>``, with ``date_done``).
- **taskiq** (broker taskiq-aio-pika, results taskiq-redis) speaks its own
  protocol: its tasks are published by taskiq's own client (``kiq``) to a
  queue of its own, ``bench.taskiq``; each task returns its finish time, which
  is stored with its result and stands in for ``date_done``.

This module is the bench's hook: which rows there are, how their workers start,
and the per-row side (:mod:`bench.peers.driver`) that fills the queue and reads
completions.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..run import Config, Workload
    from .driver import Side

#: Where both peers keep results: a Redis database of the bench's own, emptied per run.
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
AIO_CELERY = "aio-celery"
TASKIQ = "taskiq"
KINDS = (AIO_CELERY, TASKIQ)
#: The result store of each, for the report.
BACKENDS = {AIO_CELERY: "Redis, its only result backend (no PostgreSQL)",
            TASKIQ: "Redis, with taskiq-redis"}
PREFETCH_MULTIPLIER = 4  # as asyncworker's and Celery's rows


def configs(concurrency: int, workload: str) -> list[Config]:
    """One row per peer, at asyncworker's concurrency for the workload.

    For noop and sleep also asyncworker with its results in the peers' Redis: the
    same store as theirs, so a difference between the rows is the worker's.
    """
    from ..run import Config

    same_store = [Config(f"asyncworker -c {concurrency} redis", "asyncworker", concurrency,
                         results="redis")] if workload in ("noop", "sleep") else []
    return same_store + [Config(f"{kind} -c {concurrency}", kind, concurrency)
                         for kind in KINDS]


def command(config: Config, workload: Workload) -> list[str]:
    """The peer's own worker command: one process (taskiq: a supervisor and one child)."""
    c = config.concurrency
    if config.kind == AIO_CELERY:
        # The vision task lives in its own module, as on the other sides, so noop and
        # sleep do not load the S3 and HTTP clients.
        module = "vision" if workload.name == "vision" else "app"
        return [sys.executable, "-m", "aio_celery", "worker", "-c", str(c), "-Q", "bench",
                "-l", "WARNING", f"bench.peers.aio_celery_{module}:app"]
    module = "taskiq_vision" if workload.name == "vision" else "taskiq_app"
    return [sys.executable, "-m", "taskiq", "worker", f"bench.peers.{module}:broker",
            "--workers", "1", "--max-async-tasks", str(c),
            "--max-prefetch", str(c * (PREFETCH_MULTIPLIER - 1)), "--log-level", "WARNING"]


def side_for(config: Config) -> Side | None:
    """The queue, publisher and result reader of a row with results in Redis; else None."""
    if config.kind not in KINDS and config.results != "redis":
        return None
    from . import driver

    return driver.TaskiqSide() if config.kind == TASKIQ else driver.CeleryRedisSide()


#: Workloads a peer cannot run, and why: the table says so in place of figures.
CANNOT: dict[tuple[str, str], str] = {}


def cannot(config: Config, workload: Workload) -> str:
    """Why ``config`` cannot run ``workload``; "" when it can."""
    return CANNOT.get((config.kind, workload.name), "")
