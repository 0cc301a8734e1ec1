"""What differs in a peer's row: its queue, who publishes, and where completions are read.

The bench measures every row the same way (queue pre-filled, then completion
times; then a paced latency phase). For Celery-protocol rows with PostgreSQL
results, completion is ``celery_taskmeta.date_done``; a peer's :class:`Side`
gives the same figures from its own result store: aio-celery's ``date_done``
in its Redis results, and for taskiq the finish time each task returns,
stored in its result. Every peer stores in the bench's own Redis database,
which :meth:`Side.reset` empties (as the bench truncates ``celery_taskmeta``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from . import REDIS

#: Task ids and their completion time, as naive UTC like PostgreSQL's ``date_done``.
Finished = list[tuple[str, datetime]]


class Side:
    """A peer's result store in Redis; the bench's Celery client publishes (aio-celery)."""

    queue = "bench"
    #: Whether this side publishes its own tasks (else the bench's Celery client does).
    publishes = False
    prefix = "celery-task-meta-"

    def __init__(self) -> None:
        self.redis = redis.Redis.from_url(REDIS)

    def reset(self) -> None:
        """An empty result store (the bench's own Redis database)."""
        self.redis.flushdb()

    def done(self) -> int:
        """How many results are stored (asyncworker keeps a worker lease there too)."""
        return len(self._keys())

    def _keys(self) -> list[str]:
        return [k.decode() for k in self.redis.scan_iter(match=self.prefix + "*", count=5000)]

    def _results(self) -> Iterator[tuple[str, Any]]:
        keys = self._keys()
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            for key, raw in zip(batch, self.redis.mget(batch), strict=True):
                if raw is not None:
                    yield key.removeprefix(self.prefix), json.loads(raw)

    def failures(self) -> int:
        """Results that are not successes."""
        return sum(1 for _, value in self._results() if not self.succeeded(value))

    def finished(self) -> Finished:
        """Every stored result's task id and completion time, earliest first."""
        rows = [(task_id, self.finished_at(value)) for task_id, value in self._results()]
        return sorted(rows, key=lambda row: row[1])

    def succeeded(self, value: Any) -> bool:
        """Whether a stored result is a success."""
        return bool(value["status"] == "SUCCESS")

    def finished_at(self, value: Any) -> datetime:
        """A stored result's completion time: Celery's ``date_done`` (ISO, UTC)."""
        return datetime.fromisoformat(value["date_done"]).astimezone(UTC).replace(tzinfo=None)

    def publish(self, task: str, args: Callable[[int], list[Any]], count: int,
                rate: float | None) -> dict[str, float]:
        """Publish ``count`` tasks; only for a side that :attr:`publishes`."""
        raise NotImplementedError


class CeleryRedisSide(Side):
    """Celery's messages on queue ``bench``, Celery's result format in Redis: aio-celery's
    row, and asyncworker's with its Redis backend."""


class TaskiqSide(Side):
    """taskiq: its own queue, published by taskiq's client; results by taskiq-redis."""

    publishes = True

    def __init__(self) -> None:
        from .taskiq_app import QUEUE, RESULT_PREFIX

        super().__init__()
        self.queue = QUEUE
        self.prefix = RESULT_PREFIX + ":"

    def reset(self) -> None:
        """An empty result store and an empty ``bench.taskiq`` queue."""
        super().reset()
        asyncio.run(self._purge())

    async def _purge(self) -> None:
        from .taskiq_app import broker

        await broker.startup()  # declares the exchange and the queue, as its publisher does
        try:
            assert broker.write_channel is not None
            queue = await broker.write_channel.get_queue(self.queue, ensure=False)
            await queue.purge()
        finally:
            await broker.shutdown()

    def succeeded(self, value: Any) -> bool:
        """taskiq's result: ``is_err`` marks a failure."""
        return not value["is_err"]

    def finished_at(self, value: Any) -> datetime:
        """The finish time the task returned (vision: with its analysis)."""
        returned = value["return_value"]
        stamp = returned["finished_at"] if isinstance(returned, dict) else returned
        return datetime.fromtimestamp(float(stamp), UTC).replace(tzinfo=None)

    def publish(self, task: str, args: Callable[[int], list[Any]], count: int,
                rate: float | None) -> dict[str, float]:
        """Publish with taskiq's client (``kiq``), paced at ``rate`` per second if given."""
        return asyncio.run(publish(task, args, count, rate))


async def publish(task: str, args: Callable[[int], list[Any]], count: int,
                  rate: float | None, in_flight: int = 256) -> dict[str, float]:
    """``count`` kiq calls of ``task``; returns task id → publish time.

    Each kiq waits for RabbitMQ's publisher confirm, so they run side by side
    (at most ``in_flight``): paced ones start on schedule whatever the confirms
    take, as the Celery client's unconfirmed publishes do.
    """
    from taskiq.kicker import AsyncKicker

    from .taskiq_app import broker

    await broker.startup()
    sent: dict[str, float] = {}
    slots = asyncio.Semaphore(in_flight)
    pending: set[asyncio.Task[Any]] = set()

    async def kick(i: int, stamp: float) -> None:
        try:
            result = await AsyncKicker(task, broker, {}).kiq(*args(i))
        finally:
            slots.release()
        sent[result.task_id] = stamp

    started = time.monotonic()
    try:
        for i in range(count):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await slots.acquire()
            job = asyncio.create_task(kick(i, time.time()))
            pending.add(job)
            job.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    finally:
        await broker.shutdown()
    return sent
