"""Drop a job whose delivery the broker has already taken back.

On RabbitMQ, a message from a channel that has since closed was requeued by
the broker (and may already be running here as a redelivered copy); it is
dropped before it starts, and nothing is settled.
"""

from __future__ import annotations

from collections.abc import Awaitable

from ...logging import get_logger
from ..job import CANCELLED, Job, Outcome
from ..middleware import CallNext, Finish

log = get_logger("consumer")


class Stale:
    """Finish (CANCELLED, reason ``stale``) a job whose delivery is void."""

    def __init__(self, finish: Finish) -> None:
        self.finish = finish

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        # A tail call (middleware.py): no frame of its own while the task runs.
        if job.delivery.is_stale():
            log.info("channel closed before the task started; the broker redelivers it",
                     task_id=job.id)
            return self.finish(job, Outcome(CANCELLED, reason="stale"))
        return call_next(job)
