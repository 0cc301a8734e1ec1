"""Refuse tasks whose ``expires`` has passed: REVOKED (``expired``) and acked, as Celery does."""

from __future__ import annotations

from datetime import UTC, datetime

from ..job import REVOKED, Job, Outcome
from ..middleware import CallNext, Finish


class Expires:
    """Finish a job that expired before it could start."""

    def __init__(self, finish: Finish) -> None:
        self.finish = finish

    def skips(self, job: Job) -> bool:
        """No ``expires`` on the message."""
        return job.message is not None and job.message.expires is None

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        assert job.message is not None
        expires = job.message.expires
        if expires is not None and expires <= datetime.now(UTC):
            await self.finish(job, Outcome(REVOKED, reason="expired"))
            return
        await call_next(job)
