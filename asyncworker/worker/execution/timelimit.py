"""Soft and hard time limits around the task (see ``worker/timelimits.py``).

The message's ``timelimit`` header ``[hard, soft]`` wins over limits set by
the ``time_limit`` remote-control command, then the task's options, then
``task_time_limit`` / ``task_soft_time_limit``.
Coroutines are limited here; a plain function's limits are applied by the
body, which alone can reach its thread.
"""

from __future__ import annotations

from collections.abc import Awaitable

from .. import timelimits
from ..job import Job
from ..limits import Limits
from ..middleware import CallNext


class TimeLimit:
    """Resolve the job's limits and enforce them around a coroutine task."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        # Without a limit on a coroutine, a tail call (middleware.py): no frame kept.
        task, request = job.task, job.request
        assert task is not None and request is not None
        hard, soft = request.timelimit
        if hard is None or soft is None:
            if self.limits is not None:
                task_hard, task_soft = self.limits.time_limits(task)
            else:
                task_hard, task_soft = task.option("time_limit"), task.option("soft_time_limit")
            hard = task_hard if hard is None else hard
            soft = task_soft if soft is None else soft
        job.time_limits = (hard, soft)
        if task.is_async and (hard is not None or soft is not None):
            return timelimits.run_coroutine(call_next(job), soft, hard)  # type: ignore[arg-type]
        return call_next(job)
