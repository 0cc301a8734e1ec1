"""Soft and hard time limits around the task (see ``worker/timelimits.py``).

The message's ``timelimit`` header ``[hard, soft]`` wins over the task's
options, which win over ``task_time_limit`` / ``task_soft_time_limit``.
Coroutines are limited here; a plain function's limits are applied by the
body, which alone can reach its thread.
"""

from __future__ import annotations

from .. import timelimits
from ..job import Job
from ..middleware import CallNext


class TimeLimit:
    """Resolve the job's limits and enforce them around a coroutine task."""

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        task, request = job.task, job.request
        assert task is not None and request is not None
        hard, soft = request.timelimit
        if hard is None:
            hard = task.option("time_limit")
        if soft is None:
            soft = task.option("soft_time_limit")
        job.time_limits = (hard, soft)
        if task.is_async and (hard is not None or soft is not None):
            await timelimits.run_coroutine(call_next(job), soft, hard)  # type: ignore[arg-type]
        else:
            await call_next(job)
