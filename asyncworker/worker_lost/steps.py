"""The per-worker parts of worker-lost detection (see ``plugin``): the start
marker, its release, and the lease service."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..logging import get_logger
from ..services import Service
from ..worker.job import CANCELLED, REJECTED, Job
from ..worker.middleware import CallNext
from ..worker.outcomes import OutcomeStep
from .gate import Runs
from .liveness import run_owner
from .settings import WorkerLostSettings
from .store import LostStore

if TYPE_CHECKING:
    from ..worker.worker import Worker

log = get_logger("worker_lost")
#: How often (in lease refreshes) old markers and leases are swept.
SWEEP_EVERY = 300
#: Seconds a task waits for its start marker to be written before it runs anyway
#: (and a requeue for its release).
START_WAIT = 2.0


@dataclass(slots=True, frozen=True)
class Marked:
    """A run this worker wrote a marker for: its owner string and deaths so far."""

    owner: str
    deaths: int


class MarkStarted:
    """Execution middleware: record that this process runs the late-ack task."""

    def __init__(self, store: LostStore, me: str, runs: Runs, marked: dict[Job, Marked]) -> None:
        self.store, self.me, self.runs, self.marked = store, me, runs, marked
        self._runs = itertools.count(1)

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        # An early-ack task is a tail call (middleware.py): no frame kept while it runs.
        task = job.task
        if task is not None and job.id is not None and task.option("acks_late"):
            return self._marked(job, job.id, call_next)
        return call_next(job)

    async def _marked(self, job: Job, task_id: str, call_next: CallNext) -> None:
        deaths, isolated = self.runs.pop(job)
        try:
            owner = run_owner(self.me, next(self._runs))
            self.marked[job] = Marked(owner, deaths)
            # While the database is down the write waits in the writer's
            # queue; the task does not wait for it past START_WAIT (its
            # release is queued behind it, so the two land in order).
            async with asyncio.timeout(START_WAIT):
                await asyncio.shield(self.store.start(task_id, owner, deaths, isolated))
        except Exception as exc:
            log.warning("could not record the task's start in time", task_id=job.id,
                        error=repr(exc) if str(exc) else type(exc).__name__)
        await call_next(job)


class ReleaseMarker(OutcomeStep):
    """Release the marker once the job has an outcome."""

    def __init__(self, store: LostStore, runs: Runs, marked: dict[Job, Marked]) -> None:
        self.store, self.runs, self.marked = store, runs, marked

    async def after_store(self, job: Job) -> None:
        self.runs.pop(job)  # refused after the gate: nothing to remember
        marked = self.marked.pop(job, None)
        if marked is None:
            return
        outcome = job.outcome
        given_back = outcome is not None and (
            outcome.kind == CANCELLED or (outcome.kind == REJECTED and outcome.requeue))
        assert job.id is not None
        try:
            if not given_back:
                self.store.release(job.id, marked.owner)
                return
            # Before the message goes back (bounded like the start: with the
            # database down, the requeue goes on). A suspect keeps its deaths.
            # Through the writer, so it lands after a start still queued.
            written = (self.store.start(job.id, None, marked.deaths, False) if marked.deaths
                       else self.store.release_now(job.id, marked.owner))
            async with asyncio.timeout(START_WAIT):
                await asyncio.shield(written)
        except Exception as exc:
            log.warning("could not release the task's start marker", task_id=job.id,
                        error=repr(exc))


class Lease(Service):
    """Set up the store and keep this process's lease fresh."""

    name = "worker_lost"
    order = 15  # after the mailbox, before anything that reports

    def __init__(self, store: LostStore, me: str, settings: WorkerLostSettings) -> None:
        self.store, self.me, self.settings = store, me, settings
        self._task: asyncio.Task[None] | None = None

    async def start(self, worker: Worker) -> None:
        await self.store.setup()
        await self.store.refresh(self.me, self.settings.lease_ttl)
        self._task = asyncio.create_task(self._run(), name="worker-lost lease")

    async def _run(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(self.settings.worker_lost_heartbeat)
            beats += 1
            try:
                await self.store.refresh(self.me, self.settings.lease_ttl)
                if beats % SWEEP_EVERY == 0:
                    await self.store.sweep()
            except Exception as exc:
                log.warning("could not refresh the worker lease", error=repr(exc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.store.drop_lease(self.me)
        except Exception as exc:
            log.warning("could not drop the worker lease", error=repr(exc))
        await self.store.close()
