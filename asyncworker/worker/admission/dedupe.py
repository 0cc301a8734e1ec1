"""Do not run a redelivered task twice.

When the broker link drops, every unacked message comes back ``redelivered``,
and Celery runs such tasks again. Here a redelivered copy of a task still
running in this worker waits for that run and is then acked; one whose result
is already stored (its ack was lost) is acked without running. While the
result backend is unreachable the check waits for it (the message stays
unacked) rather than guess and run the task a second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from ... import states
from ...backends.base import ResultBackend
from ...backends.errors import retry_transient
from ...backoff import Outage
from ...logging import get_logger
from ..job import CANCELLED, IGNORED, REJECTED, Job, Outcome
from ..middleware import CallNext, Finish
from ..state import WorkerState

log = get_logger("dedupe")


class Dedupe:
    """Finish redelivered duplicates (as IGNORED, reason ``duplicate``)."""

    def __init__(self, state: WorkerState, backend: ResultBackend | None,
                 finish: Finish) -> None:
        self.state = state
        self.backend = backend
        self.outage = Outage("result backend", backend.describe() if backend else "", None, log)
        self.finish = finish

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        # A first delivery is a tail call (middleware.py): no frame kept while it runs.
        if job.delivery.redelivered:
            return self._redelivered(job, call_next)
        return call_next(job)

    async def _redelivered(self, job: Job, call_next: CallNext) -> None:
        if await self._duplicate(job):
            await self.finish(job, Outcome(IGNORED, reason="duplicate"))
            return
        await call_next(job)

    async def _duplicate(self, job: Job) -> bool:
        assert job.message is not None
        task_id = job.message.id
        first = self.state.running(task_id)
        if first is not None and first is not job and first.handler is not None:
            log.info("redelivered task is still running here; waiting for it",
                     task_id=task_id)
            await asyncio.wait([first.handler])
            # A first run that handed its message back (requeue, interrupted)
            # leaves this copy as the one to run.
            outcome = first.outcome
            return outcome is None or not (outcome.kind == CANCELLED or (
                outcome.kind == REJECTED and outcome.requeue))
        if self.backend is None:
            return False
        backend = self.backend
        try:
            stored = await retry_transient(lambda: backend.get(task_id), self.outage)
        except Exception as exc:
            log.warning("could not check redelivered task", task_id=task_id, error=repr(exc))
            return False
        if stored is not None and stored.state in states.READY_STATES:
            log.info("redelivered task already finished; acking", task_id=task_id,
                     state=stored.state)
            return True
        return False
