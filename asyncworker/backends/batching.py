"""Batched, durable writes shared by the result backends.

Each ``submit`` queues one row and waits until it is written. A single flusher
writes whatever has queued since its last round trip, so under load one round
trip serves many tasks, while each caller still learns when its own row is
safe (late acks wait for that). Transient errors are retried forever with
backoff: a row is never dropped, because its message is not acked yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..logging import get_logger

log = get_logger("backend.batch")

WriteMany = Callable[[Sequence[Any]], Awaitable[None]]


class BatchWriter:
    """Queue rows; one background task writes them in batches."""

    def __init__(self, write_many: WriteMany, transient: tuple[type[BaseException], ...],
                 batch_size: int, describe: str) -> None:
        self._write_many = write_many
        self._transient = transient
        self._batch_size = max(1, batch_size)
        self._describe = describe
        self._pending: list[tuple[Any, asyncio.Future[None] | None]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Monitoring: each written batch is reported as (rows, seconds) to the
        # observers; ``failing`` while a transient error is being retried, and
        # ``reconnects`` counts the writes that succeeded after one.
        self.observers: list[Callable[[int, float], None]] = []
        self.failing = False
        self.reconnects = 0

    def start(self) -> None:
        """Start the flusher task."""
        self._task = asyncio.create_task(self._run(), name=f"batch-writer {self._describe}")

    async def close(self) -> None:
        """Write everything queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, row: Any) -> None:
        """Queue ``row`` and wait until it is written (or failed for good)."""
        # A cancelled caller (cold shutdown) cancels only its future: the row
        # stays queued and is written all the same (no shield needed).
        await self.enqueue(row)

    def enqueue(self, row: Any) -> asyncio.Future[None]:
        """Queue ``row``; the future is done once it is written (or failed for good)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(row, future)
        return future

    def post(self, row: Any) -> None:
        """Queue ``row`` for the next batch without waiting for it (nobody hears of it)."""
        self._queue(row, None)

    def _queue(self, row: Any, future: asyncio.Future[None] | None) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("result writer is not running")
        self._pending.append((row, future))
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._pending[: self._batch_size]
            del self._pending[: self._batch_size]
            try:
                await self._write(batch)
            except Exception as exc:
                # A bug here must fail these writes, not strand every later caller.
                log.exception("result writer error", error=repr(exc))
                for _, future in batch:
                    _settle(future, exc)

    async def _write(self, batch: list[tuple[Any, asyncio.Future[None] | None]]) -> None:
        delay = 0.2
        started = time.monotonic()
        while True:
            try:
                await self._write_many([row for row, _ in batch])
                if self.failing:
                    self.failing = False
                    self.reconnects += 1
                break
            except self._transient as exc:
                self.failing = True
                log.warning("result write failed, retrying", backend=self._describe,
                            rows=len(batch), error=str(exc) or type(exc).__name__,
                            retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    return
                # One bad row must not fail its neighbours: write them one by one.
                log.warning("batched result write failed; writing rows singly",
                            error=repr(exc))
                for item in batch:
                    await self._write([item])
                return
        for _, future in batch:
            _settle(future, None)
        for observe in self.observers:
            observe(len(batch), time.monotonic() - started)


def _settle(future: asyncio.Future[None] | None, error: BaseException | None) -> None:
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
