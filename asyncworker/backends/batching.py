"""Batched, durable writes shared by the result backends.

Each ``submit`` queues one row and waits until it is written. A single flusher
writes whatever has queued since its last round trip, so under load one round
trip serves many tasks, while each caller still learns when its own row is
safe (late acks wait for that). Transient errors (``errors.is_transient``:
the server restarting or unreachable) are retried with backoff until it is
back: a row is never dropped nor failed for them, because its message is not
acked yet, and every write is an idempotent upsert, so a retried batch that
was in fact committed changes nothing.

**Linger.** Under load, rows queue while the previous round trip is out, and
batches fill by themselves. At a low rate of long tasks (a few hundred a
second, each running for seconds) every row would go alone: a round trip, a
pool checkout and a wake-up per task, and its ack alone after it. A row may
therefore wait a little for company: :class:`Linger` allows a share of the
task's own run time (2% by default, at most 20 ms), so a task that ran a
second has its result stored up to 20 ms later, in a batch of several, and a
task that ran a millisecond waits 20 µs, which is nothing. The wait ends as
soon as the batch is full or any row's allowance is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..backoff import BackoffPolicy, Outage
from ..logging import get_logger
from .errors import is_transient

log = get_logger("backend.batch")

WriteMany = Callable[[Sequence[Any]], Awaitable[None]]


#: A linger with less than this left is over. uvloop's clock moves in whole
#: milliseconds, so a shorter wait would wake with no time passed, again and again.
_SLACK = 0.001


@dataclass(frozen=True, slots=True)
class Linger:
    """How long a row may wait for others to share its write: ``ratio`` of its task's
    run time, at most ``limit`` seconds (see the module docstring)."""

    ratio: float = 0.0
    limit: float = 0.0

    @classmethod
    def from_settings(cls, settings: Any) -> Linger:
        """``result_batch_linger_ratio`` and ``result_batch_linger_max``."""
        return cls(max(0.0, settings.result_batch_linger_ratio),
                   max(0.0, settings.result_batch_linger_max))

    def allowance(self, runtime: float) -> float:
        """Seconds a row whose task ran ``runtime`` seconds may wait."""
        return min(self.limit, self.ratio * runtime) if runtime > 0 else 0.0


class BatchWriter:
    """Queue rows; one background task writes them in batches."""

    def __init__(self, write_many: WriteMany, batch_size: int, describe: str,
                 policy: BackoffPolicy | None = None, what: str = "result backend",
                 linger: Linger | None = None) -> None:
        self._write_many = write_many
        self._batch_size = max(1, batch_size)
        self._describe = describe
        self._linger = linger or Linger()
        self._pending: list[tuple[Any, asyncio.Future[None] | None]] = []
        #: Loop time by which the pending rows must be on their way (the earliest
        #: of their allowances); infinite while nothing is pending.
        self._due = math.inf
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Monitoring: each written batch is reported as (rows, seconds) to the
        # observers; the outage counts failed attempts and recoveries.
        self.observers: list[Callable[[int, float], None]] = []
        # ``what`` names the writer in its outage log lines ("result backend ...").
        self.outage = Outage(what, describe, policy, log)

    @property
    def failing(self) -> bool:
        """A transient error is being retried."""
        return self.outage.down

    @property
    def reconnects(self) -> int:
        """Writes that succeeded after a transient error (the link came back)."""
        return self.outage.recoveries

    @property
    def failures(self) -> int:
        """Write attempts that failed with a transient error."""
        return self.outage.failures

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

    async def submit(self, row: Any, runtime: float = 0.0) -> None:
        """Queue ``row`` and wait until it is written (or failed for good).

        ``runtime``: seconds the row's task ran, for its :class:`Linger` allowance.
        """
        # A cancelled caller (cold shutdown) cancels only its future: the row
        # stays queued and is written all the same (no shield needed).
        await self.enqueue(row, runtime)

    def enqueue(self, row: Any, runtime: float = 0.0) -> asyncio.Future[None]:
        """Queue ``row``; the future is done once it is written (or failed for good)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue(row, future, loop.time() + self._linger.allowance(runtime))
        return future

    def post(self, row: Any) -> None:
        """Queue ``row`` for the next batch without waiting for it (nobody hears of it)."""
        self._queue(row, None, asyncio.get_running_loop().time())

    def _queue(self, row: Any, future: asyncio.Future[None] | None, due: float) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("result writer is not running")
        self._pending.append((row, future))
        # The flusher only needs waking when this row moves the deadline up or
        # fills the batch (it sleeps until the deadline otherwise).
        if due < self._due or len(self._pending) >= self._batch_size:
            self._due = min(self._due, due)
            self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._due - loop.time()
            if wait > _SLACK and len(self._pending) < self._batch_size and not self._closing:
                # Lingering: until the earliest allowance is spent, the batch
                # fills, or the writer closes (each sets the event).
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()
                continue
            batch = self._pending[: self._batch_size]
            del self._pending[: self._batch_size]
            # Rows left over from a full batch have waited long enough.
            self._due = loop.time() if self._pending else math.inf
            try:
                await self._write(batch)
            except Exception as exc:
                # A bug here must fail these writes, not strand every later caller.
                log.exception("result writer error", error=repr(exc))
                for _, future in batch:
                    _settle(future, exc)

    async def _write(self, batch: list[tuple[Any, asyncio.Future[None] | None]]) -> None:
        started = time.monotonic()
        while True:
            try:
                await self._write_many([row for row, _ in batch])
                self.outage.recovered()
                break
            except Exception as exc:
                if is_transient(exc):
                    await asyncio.sleep(self.outage.failed(exc))
                    continue
                # A permanent error: the row itself is refused.
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
