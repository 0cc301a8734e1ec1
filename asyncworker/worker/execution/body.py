"""The end of the execution chain: call the task function.

``async def`` tasks are awaited in the job's own asyncio task. Plain ``def``
tasks run in the worker's bounded thread pool, with ``self.request`` visible in
the thread, under the time limits ``TimeLimit`` resolved. The return value
becomes a SUCCESS outcome; an exception goes up to the executor.
"""

from __future__ import annotations

import contextvars
import functools
from concurrent.futures import Executor

from .. import timelimits
from ..job import SUCCESS, Job, Outcome


class Body:
    """Run ``job.task`` with the request's arguments."""

    def __init__(self, threads: Executor) -> None:
        self.threads = threads

    async def __call__(self, job: Job) -> None:
        task, request = job.task, job.request
        assert task is not None and request is not None
        if task.is_async:
            value = await task.run(*request.args, **request.kwargs)
        else:
            ctx = contextvars.copy_context()
            call = functools.partial(ctx.run, task.run, *request.args, **request.kwargs)
            hard, soft = job.time_limits
            value = await timelimits.run_in_thread(self.threads, call, soft, hard)
        job.outcome = Outcome(SUCCESS, value=value)
