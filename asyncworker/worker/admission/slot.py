"""The global concurrency slot (``-c`` / ``worker_concurrency``), held for the run.

Its size can change while the worker runs (``pool_grow`` / ``pool_shrink`` /
``autoscale`` remote-control commands): growing lets waiting jobs in at once;
shrinking lets running jobs finish and admits new ones only below the new size.
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType

from ..job import Job
from ..middleware import CallNext


class ResizableSemaphore:
    """A FIFO semaphore whose number of slots can be changed at any time."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a semaphore needs at least one slot")
        self.size = size
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        """Whether an acquire would wait now."""
        return self.in_use >= self.size or bool(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free now (no waiting, no coroutine)."""
        if self.in_use >= self.size or self._waiters:
            return False
        self.in_use += 1
        return True

    async def acquire(self) -> None:
        """Take a slot, waiting in arrival order for one to be free."""
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the releaser counted the slot as ours before waking us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: hand it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back and wake the next waiters that now fit."""
        self.in_use -= 1
        self._wake()

    def resize(self, size: int) -> None:
        """Change the number of slots (at least one); jobs holding one keep it."""
        if size < 1:
            raise ValueError("a semaphore needs at least one slot")
        self.size = size
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()


class Slot:
    """At most ``concurrency`` jobs past this point at once."""

    def __init__(self, concurrency: int) -> None:
        self.semaphore = ResizableSemaphore(concurrency)

    @property
    def concurrency(self) -> int:
        """The number of slots now."""
        return self.semaphore.size

    def resize(self, concurrency: int) -> None:
        """Change the number of slots."""
        self.semaphore.resize(concurrency)

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        semaphore = self.semaphore
        # A free slot is taken without entering acquire (two coroutine frames
        # per message on the hot path).
        if not semaphore.try_acquire():
            await semaphore.acquire()
        try:
            await call_next(job)
        finally:
            semaphore.release()
