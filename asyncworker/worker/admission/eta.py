"""Hold a task until its ETA (``countdown`` / ``eta``) without taking a slot.

While held, the job is *scheduled* in ``WorkerState`` and its delivery is
held aside (on RabbitMQ the prefetch window grows by one), so held messages
never starve ready ones; it starts within milliseconds of its ETA.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ..job import RESERVED, SCHEDULED, Job
from ..middleware import CallNext
from ..state import WorkerState


class Eta:
    """Wait until ``job.message.eta``."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        assert job.message is not None
        eta = job.message.eta
        if eta is not None:
            delay = (eta - datetime.now(UTC)).total_seconds()
            if delay > 0:
                self.state.move(job, SCHEDULED)
                async with job.delivery.hold():
                    await asyncio.sleep(delay)
                self.state.move(job, RESERVED)
        await call_next(job)
