"""The global concurrency slot (``-c`` / ``worker_concurrency``), held for the run."""

from __future__ import annotations

import asyncio

from ..job import Job
from ..middleware import CallNext


class Slot:
    """At most ``concurrency`` jobs past this point at once."""

    def __init__(self, concurrency: int) -> None:
        self.semaphore = asyncio.Semaphore(concurrency)

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        async with self.semaphore:
            await call_next(job)
