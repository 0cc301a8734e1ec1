"""The task class's own hooks: ``on_success``, ``on_failure``, ``on_retry`` (sync or async).

As in Celery: ``on_success`` and ``on_failure`` run before the state is
stored, ``on_retry`` once the retry is published. A hook that raises is
logged; it never changes the outcome.
"""

from __future__ import annotations

import inspect
from typing import Any

from ...logging import get_logger
from ..job import FAILURE, RETRY, SUCCESS, Job
from . import OutcomeStep

log = get_logger("executor")


class TaskHandlers(OutcomeStep):
    """Call the task's on_success / on_failure / on_retry."""

    async def before_store(self, job: Job) -> None:
        outcome, task, request = job.outcome, job.task, job.request
        if outcome is None or task is None or request is None:
            return
        if outcome.kind == SUCCESS:
            await _call(task.on_success, job, outcome.value, request.id, request.args,
                        request.kwargs)
        elif outcome.kind == FAILURE:
            await _call(task.on_failure, job, outcome.exc, request.id, request.args,
                        request.kwargs, outcome.traceback)

    async def after_store(self, job: Job) -> None:
        outcome, task, request = job.outcome, job.task, job.request
        if outcome is None or task is None or request is None or outcome.kind != RETRY:
            return
        await _call(task.on_retry, job, outcome.exc, request.id, request.args, request.kwargs,
                    outcome.traceback)


async def _call(hook: Any, job: Job, *args: Any) -> None:
    try:
        value = hook(*args)
        if inspect.isawaitable(value):
            await value
    except Exception as exc:
        log.error("task hook raised", task_id=job.id, hook=hook.__name__, error=repr(exc))
