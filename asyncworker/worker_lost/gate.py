"""The admission gate: a redelivered late-ack task whose worker died under it.

Runs after the core gates (so a redelivered task already finished is acked
by ``dedupe`` first) and before the concurrency slot. Only redelivered
late-ack messages are looked at, and only those with a marker whose owner is
not this process and is found dead (see ``liveness``); everything else goes
straight on.

A task found lost with its worker was running either as a *bystander* (it
merely ran beside whatever killed the process) or as the *culprit*. One
death cannot tell them apart, so every such task becomes a *suspect*: its
death is recorded (``deaths`` + 1, nobody running it) and it runs again, but
**isolated**: this worker runs one suspect at a time, while ordinary tasks
go on beside it. A suspect that finishes was a bystander. A worker that dies
while running an isolated suspect names it: when that task comes back, it
is *convicted*, and then

* without ``reject_on_worker_lost`` (the default, Celery's behaviour), it is
  stored FAILURE ``WorkerLostError`` and acked;
* with ``reject_on_worker_lost``, it runs again (isolated) until it has
  taken down more than ``worker_max_redeliveries`` workers; the next time it
  is stored FAILURE ``WorkerLostError`` and dead-lettered with the reason
  ``poison``.

The tasks that ran beside a convicted suspect's death become suspects
themselves, and finish once isolated: none is ever failed or dead-lettered
for a death it did not cause (an early-ack or first-run task that kills the
worker while a bystander suspect runs alone could still get it blamed; it
then becomes a suspect too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

from .. import states
from ..backends.base import TaskOutcome, exception_to_meta
from ..exceptions import WorkerLostError
from ..hooks import WorkerHooks
from ..logging import get_logger
from ..task import Task
from ..worker.job import FAILURE, REJECTED, Job, Outcome
from ..worker.middleware import CallNext
from .liveness import Liveness, worker_of
from .store import LostStore, Marker

log = get_logger("worker_lost")

ISOLATE, FAIL, POISON = "isolate", "fail", "poison"


class Runs:
    """What the gate decided for the jobs it let through: (deaths, isolated)."""

    def __init__(self) -> None:
        self._by_job: dict[Job, tuple[int, bool]] = {}

    def set(self, job: Job, deaths: int, isolated: bool) -> None:
        """Remember the job's deaths so far and whether it runs isolated."""
        self._by_job[job] = (deaths, isolated)

    def pop(self, job: Job) -> tuple[int, bool]:
        """Take the decision back (a first run: no deaths, not isolated)."""
        return self._by_job.pop(job, (0, False))


class WorkerLost:
    """Judge redelivered late-ack jobs; isolate suspects; fail or dead-letter culprits."""

    def __init__(self, store: LostStore, liveness: Liveness, runs: Runs, hooks: WorkerHooks,
                 executor: _Finisher, max_redeliveries: int) -> None:
        self.store = store
        self.liveness = liveness
        self.runs = runs
        self.hooks = hooks
        self.executor = executor
        self.max_redeliveries = max_redeliveries
        #: One suspect at a time in this worker.
        self.isolation = asyncio.Lock()

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        # Everything but a redelivered late-ack task is a tail call (middleware.py).
        task = job.task
        if not job.delivery.redelivered or task is None or not task.option("acks_late"):
            return call_next(job)
        return self._judge(job, task, call_next)

    async def _judge(self, job: Job, task: Task, call_next: CallNext) -> None:
        try:
            verdict = await self._verdict(job)
        except Exception as exc:
            # Cannot tell: run it alone, the safe choice either way.
            log.warning("could not check a redelivered task; running it isolated",
                        task_id=job.id, error=repr(exc))
            verdict = (0, False, True)
        deaths, convicted, suspect = verdict
        if not suspect:
            self.runs.set(job, deaths, False)
            await call_next(job)
            return
        if convicted:
            reject = bool(task.option("reject_on_worker_lost"))
            if not reject:
                await self._fail(job, deaths)
                return
            if deaths > self.max_redeliveries:
                await self._poison(job, deaths)
                return
        log.warning("task was running when its worker died; running it isolated",
                    task_id=job.id, task=job.name, deaths=deaths, reason="worker lost")
        self.hooks.task_worker_lost(job, deaths, ISOLATE)
        async with self.isolation:
            self.runs.set(job, deaths, True)
            await call_next(job)

    async def _verdict(self, job: Job) -> tuple[int, bool, bool]:
        """(deaths, convicted, suspect) for a redelivered late-ack job."""
        assert job.id is not None
        marker: Marker | None = await self.store.get(job.id)
        if marker is None:
            return 0, False, False  # never started anywhere we know of
        if marker.owner is None:
            return marker.deaths, False, True  # a recorded suspect, not yet run again
        if not await self.liveness.dead(worker_of(marker.owner)):
            return marker.deaths, False, False  # its worker lives: a broker link drop
        deaths = marker.deaths + 1
        # Recorded before anything else: dying again before it runs adds no death.
        await self.store.start(job.id, None, deaths, False)
        return deaths, marker.isolated, True

    def _lost(self, job: Job, deaths: int) -> WorkerLostError:
        return WorkerLostError(
            f"Worker exited prematurely: the worker process died while running the task "
            f"({deaths} worker(s) lost so far).")

    async def _fail(self, job: Job, deaths: int) -> None:
        exc = self._lost(job, deaths)
        log.error("task killed its worker; marked failed", task_id=job.id, task=job.name,
                  deaths=deaths, reason="worker lost")
        self.hooks.task_worker_lost(job, deaths, FAIL)
        await self.executor.finish(job, Outcome(FAILURE, exc=exc, reason="worker lost"))
        await self._forget(job)

    async def _poison(self, job: Job, deaths: int) -> None:
        exc = self._lost(job, deaths)
        request = job.request
        log.error("task killed its worker too often; dead-lettering it", task_id=job.id,
                  task=job.name, deaths=deaths, reason=POISON)
        self.hooks.task_worker_lost(job, deaths, POISON)
        if request is not None and not request.ignore_result:
            # Clients see it failed, as a Celery worker would report it.
            await self.executor.store(TaskOutcome(request.id, states.FAILURE,
                                                  exception_to_meta(exc), None, request))
        await self.executor.finish(job, Outcome(REJECTED, exc=exc, reason=POISON))
        await self._forget(job)

    async def _forget(self, job: Job) -> None:
        assert job.id is not None
        try:
            await self.store.forget(job.id)
        except Exception as exc:
            log.warning("could not clear a lost task's marker", task_id=job.id,
                        error=repr(exc))


class _Finisher(Protocol):
    """The part of ``Executor`` the gate uses."""

    async def finish(self, job: Job, outcome: Outcome) -> None:
        """Store, settle and close ``job`` with ``outcome``."""

    async def store(self, outcome: TaskOutcome) -> bool:
        """Store one state."""
