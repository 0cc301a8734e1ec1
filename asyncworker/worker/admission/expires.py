"""Refuse tasks whose ``expires`` has passed: REVOKED (``expired``) and acked, as Celery does."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime

from ..job import REVOKED, Job, Outcome
from ..middleware import CallNext, Finish


class Expires:
    """Finish a job that expired before it could start."""

    def __init__(self, finish: Finish) -> None:
        self.finish = finish

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        # A tail call (middleware.py): no frame of its own while the task runs.
        assert job.message is not None
        expires = job.message.expires
        if expires is not None and expires <= datetime.now(UTC):
            return self.finish(job, Outcome(REVOKED, reason="expired"))
        return call_next(job)
