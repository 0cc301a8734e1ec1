"""Per-task and per-queue concurrency caps (``worker_task_concurrency``,
``worker_queue_concurrency``), held for the whole run."""

from __future__ import annotations

from ..job import Job
from ..limits import Limits
from ..middleware import CallNext


class Caps:
    """Hold the task's and the queue's caps while the job goes on."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        assert job.message is not None
        async with self.limits.caps(job.message.task, job.queue):
            await call_next(job)
