"""``task_dead_letter_on_failure``: keep a copy of tasks whose retries ran out.

Rejected messages are dead-lettered when the executor settles them; this
step adds the copy Celery never keeps, of a failed task that will not be
tried again, to ``<queue>.dlq``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..job import FAILURE, Job
from . import OutcomeStep

if TYPE_CHECKING:
    from ..executor import Executor


class DeadLetterFailures(OutcomeStep):
    """Copy finally-failed tasks to the dead-letter queue."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    async def after_store(self, job: Job) -> None:
        outcome, task, request = job.outcome, job.task, job.request
        if outcome is None or task is None or request is None or outcome.kind != FAILURE:
            return
        if request.retries > 0 and task.max_retries is not None and (
                request.retries >= task.max_retries):
            await self.executor.keep_dead_letter(job, "retries exhausted", outcome.exc)
