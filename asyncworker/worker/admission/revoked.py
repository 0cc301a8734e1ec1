"""Refuse revoked tasks: by id (``app.control.revoke``) or by stamp
(``revoke_by_stamped_headers``); stored REVOKED and acked."""

from __future__ import annotations

from collections.abc import Awaitable

from ...control.revoked import revoking_stamp
from ..job import REVOKED, Job, Outcome
from ..middleware import CallNext, Finish
from ..state import WorkerState


class Revoked:
    """Finish a job whose id is in the worker's revoked set."""

    def __init__(self, state: WorkerState, finish: Finish) -> None:
        self.revoked = state.revoked
        self.stamps = state.revoked_stamps
        self.finish = finish

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        # A tail call (middleware.py): no frame of its own while the task runs.
        message = job.message
        assert message is not None
        if message.id in self.revoked or (
                self.stamps and revoking_stamp(message.headers, self.stamps) is not None):
            return self.finish(job, Outcome(REVOKED, reason="revoked"))
        return call_next(job)
