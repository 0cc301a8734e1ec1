"""Rate limits (``rate_limit``, ``worker_global_rate_limits``), before a slot is taken.

A throttled task waits here holding no concurrency slot, so it never blocks
the others. The buckets themselves are in ``worker/limits.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable

from ..job import Job
from ..limits import Limits
from ..middleware import CallNext


class RateLimit:
    """Wait for the task's local, then global, rate limit."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        # An unthrottled task is a tail call (middleware.py): no frame kept while it runs.
        assert job.task is not None
        if not self.limits.throttles(job.task):
            return call_next(job)
        return self._throttled(job, call_next)

    async def _throttled(self, job: Job, call_next: CallNext) -> None:
        assert job.task is not None
        await self.limits.wait_rate(job.task)
        await call_next(job)
