"""Worker events: ``worker-online`` at start, ``worker-heartbeat`` every 2 s,
``worker-offline`` at shutdown.

They are always sent, as by a Celery worker running with heartbeats: Flower
and ``celery events`` hold a worker alive while its heartbeats keep coming.
Each carries ``freq`` (the interval), ``active`` (tasks running),
``processed`` (tasks finished so far), ``loadavg`` and the ``sw_*`` fields.

The service also owns the dispatcher's life: it starts publishing before the
first task is consumed and, at shutdown (warm or cold, after running tasks
have finished or been cancelled), sends ``worker-offline`` and publishes what
is still queued before the broker connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from typing import TYPE_CHECKING, Any

from ..logging import get_logger
from ..services import EVENTS, Service
from .dispatcher import EventDispatcher

if TYPE_CHECKING:
    from ..worker.state import WorkerState
    from ..worker.worker import Worker

log = get_logger("events")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, to two decimals (zeros where unknown)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


class WorkerEvents(Service):
    """Sends the worker events and runs the dispatcher."""

    name = "events"
    order = EVENTS

    def __init__(self, dispatcher: EventDispatcher, state: WorkerState, *,
                 interval: float = 2.0, sw_ident: str = "py-celery") -> None:
        self.dispatcher = dispatcher
        self.state = state
        self.interval = interval
        from .. import __version__  # the package's __init__ imports this module

        self.software = {"sw_ident": sw_ident, "sw_ver": __version__,
                         "sw_sys": platform.system()}
        #: Called every beat, before the heartbeat (the plugin lapses remote events there).
        self.on_beat: list[Any] = []
        self._beat: asyncio.Task[None] | None = None

    def fields(self) -> dict[str, Any]:
        """What every worker event carries besides the common fields."""
        state = self.state
        return {"freq": self.interval, "active": len(state.active),
                "processed": sum(state.total.values()), "loadavg": load_average(),
                **self.software}

    def send(self, event_type: str) -> None:
        """Queue one worker event now (``worker-heartbeat`` also on request)."""
        self.dispatcher.send(event_type, **self.fields())

    async def start(self, worker: Worker) -> None:
        self.dispatcher.start()
        self.send("worker-online")
        self._beat = asyncio.create_task(self._heartbeats(), name="asyncworker-heartbeat")

    async def _heartbeats(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            for callback in self.on_beat:
                callback()
            self.send("worker-heartbeat")

    async def stop(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
            self.send("worker-offline")
        await self.dispatcher.close()
        if self.dispatcher.dropped:
            log.warning("events dropped during this run", dropped=self.dispatcher.dropped)
