"""``worker --beat``: a scheduler running inside a worker (for development).

It publishes through the worker's own broker connection. Replicas still
coordinate through the store, so a worker with ``--beat`` next to a separate
``beat`` process does not double any tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from ..services import BEAT, Service
from .scheduler import Beat

if TYPE_CHECKING:
    from ..worker.worker import Worker


class BeatService(Service):
    """Runs :class:`~asyncworker.beat.scheduler.Beat` beside the consumer."""

    name = "beat"
    order = BEAT

    def __init__(self) -> None:
        self.beat: Beat | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, worker: Worker) -> None:
        """Start the scheduler; a bad schedule fails the worker's start-up."""
        self.beat = Beat(worker.app, node=f"{worker.settings.worker_nodename}:beat")
        self.task = asyncio.create_task(self.beat.run(), name="beat")
        ready = asyncio.create_task(self.beat.ready.wait())
        await asyncio.wait({self.task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self.task.done():
            self.task.result()  # raises what stopped it

    async def stop(self) -> None:
        """Stop after the ticks being published."""
        if self.beat is not None:
            self.beat.stop()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
