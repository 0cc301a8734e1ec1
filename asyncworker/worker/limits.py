"""Rate limits and concurrency caps, applied before a task takes a global slot.

* ``rate_limit`` (task option, or ``task_default_rate_limit``): Celery's token
  bucket of capacity 1, per task name and per worker.
* ``worker_global_rate_limits``: the same, but shared by every worker through
  Redis (Celery has no such thing). A Lua script hands out start times.
* ``worker_task_concurrency`` / ``worker_queue_concurrency``: at most N tasks
  of a name, or from a queue, running at once in this worker.
* time limits changed by the ``time_limit`` remote-control command: they
  replace the task's own until the worker stops, as in Celery.

A task waiting here holds no slot of the global semaphore, so a throttled task
never blocks the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import redis.asyncio as aioredis

from ..exceptions import ImproperlyConfigured
from ..settings import Settings

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}

# KEYS[1]: the task's next free start time (microseconds); ARGV[1]: interval (µs).
# Returns how long the caller waits before starting (µs).
_RESERVE_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local start = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local ttl_ms = math.ceil((start + interval - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', start + interval), 'PX', ttl_ms)
return start - now
"""


def parse_rate(value: str | float | int | None) -> float | None:
    """Celery's rate strings: ``"10/s"``, ``"100/m"``, ``"5/h"``, or a bare per-second number."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        rate = float(value)
    else:
        count, _, unit = str(value).partition("/")
        try:
            rate = float(count) / _UNITS[unit.strip() or "s"]
        except (KeyError, ValueError) as exc:
            raise ImproperlyConfigured(f"invalid rate limit {value!r}") from exc
    if math.isnan(rate) or math.isinf(rate):
        # NaN would reach a timer (and corrupt the event loop); inf means nothing.
        raise ImproperlyConfigured(f"invalid rate limit {value!r}: not a finite number")
    return rate if rate > 0 else None


class TokenBucket:
    """Capacity-1 bucket: the first call passes, then one per interval, in arrival order."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next = 0.0

    async def wait(self) -> None:
        """Wait for this caller's turn."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


_NO_CAP = contextlib.nullcontext()


@contextlib.asynccontextmanager
async def _both(first: asyncio.Semaphore, second: asyncio.Semaphore) -> AsyncIterator[None]:
    async with first, second:
        yield


class Limits:
    """All throttles of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._buckets: dict[str, TokenBucket | None] = {}
        self._task_caps = {name: asyncio.Semaphore(n)
                           for name, n in settings.worker_task_concurrency.items()}
        self._queue_caps = {name: asyncio.Semaphore(n)
                            for name, n in settings.worker_queue_concurrency.items()}
        self._global_rates = {name: parse_rate(rate)
                              for name, rate in settings.worker_global_rate_limits.items()}
        #: Time limits set by remote control: task name -> (hard, soft).
        self._time_limits: dict[str, tuple[float | None, float | None]] = {}
        self._redis: aioredis.Redis | None = None
        self._reserve: Any = None
        if any(self._global_rates.values()):
            url = settings.worker_rate_limit_redis_url
            if not url:
                raise ImproperlyConfigured(
                    "worker_global_rate_limits needs worker_rate_limit_redis_url")
            self._redis = aioredis.from_url(url)
            self._reserve = self._redis.register_script(_RESERVE_LUA)

    def has_caps(self) -> bool:
        """Whether any per-task or per-queue cap is configured."""
        return bool(self._task_caps or self._queue_caps)

    def set_rate(self, task_name: str, rate: str | float | None) -> None:
        """Change a task's per-worker rate limit (None removes it)."""
        per_second = parse_rate(rate)
        self._buckets[task_name] = TokenBucket(per_second) if per_second else None

    def set_time_limits(self, task_name: str, soft: float | None, hard: float | None) -> None:
        """Replace a task's soft and hard time limits (None: no limit) for new runs."""
        self._time_limits[task_name] = (hard, soft)

    def time_limits(self, task: Any) -> tuple[float | None, float | None]:
        """The task's ``(hard, soft)`` limits: as last set remotely, else its options."""
        found = self._time_limits.get(task.name)
        if found is not None:
            return found
        return task.option("time_limit"), task.option("soft_time_limit")

    def throttles(self, task: Any) -> bool:
        """Whether ``wait_rate`` may wait for ``task`` (a local or a global rate limit)."""
        return self._bucket(task) is not None or bool(self._global_rates.get(task.name))

    def _bucket(self, task: Any) -> TokenBucket | None:
        if task.name not in self._buckets:
            rate = task.rate_limit or self.settings.task_default_rate_limit
            self.set_rate(task.name, rate)
        return self._buckets[task.name]

    async def wait_rate(self, task: Any) -> None:
        """Wait for the task's local, then global, rate limit."""
        bucket = self._bucket(task)
        if bucket is not None:
            await bucket.wait()
        rate = self._global_rates.get(task.name)
        if rate:
            wait_us = await self._reserve(keys=[f"asyncworker:rate:{task.name}"],
                                          args=[int(1_000_000 / rate)])
            if wait_us > 0:
                await asyncio.sleep(int(wait_us) / 1_000_000)

    def caps(self, task_name: str, queue: str | None) -> AbstractAsyncContextManager[Any]:
        """Hold the task's and the queue's concurrency caps, when configured."""
        held = [cap for cap in (self._task_caps.get(task_name),
                                self._queue_caps.get(queue or "")) if cap is not None]
        if not held:
            return _NO_CAP  # the common case costs nothing per task
        if len(held) == 1:
            return held[0]
        return _both(held[0], held[1])

    async def close(self) -> None:
        """Disconnect from Redis."""
        if self._redis is not None:
            await self._redis.aclose()
