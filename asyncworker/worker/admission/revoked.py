"""Refuse tasks revoked by id (``app.control.revoke``): stored REVOKED and acked."""

from __future__ import annotations

from ..job import REVOKED, Job, Outcome
from ..middleware import CallNext, Finish
from ..state import WorkerState


class Revoked:
    """Finish a job whose id is in the worker's revoked set."""

    def __init__(self, state: WorkerState, finish: Finish) -> None:
        self.revoked = state.revoked
        self.finish = finish

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        assert job.message is not None
        if job.message.id in self.revoked:
            await self.finish(job, Outcome(REVOKED, reason="revoked"))
            return
        await call_next(job)
