"""``Eta``: a task is held until its ETA as *scheduled*, outside the prefetch window and
without a concurrency slot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from asyncworker.broker.memory import MemoryBroker
from asyncworker.worker.admission.eta import Eta
from asyncworker.worker.job import RESERVED, SCHEDULED, Job
from asyncworker.worker.state import WorkerState

from .helpers import Kit, Next, RecordingHooks, make_job, until


async def test_job_is_scheduled_and_held_until_its_eta(kit: Kit) -> None:
    """Until the ETA the job is in ``state.scheduled`` and its delivery held (the window
    grows by one); at the ETA it becomes reserved and goes on."""
    broker, state = MemoryBroker(), WorkerState()
    await broker.set_prefetch(4)
    eta = datetime.now(UTC) + timedelta(seconds=0.08)
    job = await make_job(kit.app, "t.add", (1, 2), broker=broker, eta=eta)
    seen: list[tuple[str, bool, int, bool]] = []

    async def at_start(job: Job) -> None:
        seen.append((job.state, job in state.reserved, broker.prefetch,
                     datetime.now(UTC) >= eta))

    call_next = Next(at_start)
    state.move(job, RESERVED)
    waiting = asyncio.create_task(Eta(state)(job, call_next))
    await until(lambda: job in state.scheduled)
    assert job.state == SCHEDULED and job not in state.reserved
    assert broker.prefetch == 5 and not call_next.called
    await asyncio.wait_for(waiting, 1)
    assert seen == [(RESERVED, True, 4, True)]  # reserved, window back, ETA reached
    assert not state.scheduled


async def test_past_or_missing_eta_goes_on_at_once(kit: Kit) -> None:
    """An ETA already past, or none, is not scheduled at all."""
    state = WorkerState()
    past = await make_job(kit.app, "t.add", (1, 2), eta=datetime.now(UTC) - timedelta(1))
    none = await make_job(kit.app, "t.add", (1, 2))
    call_next = Next(lambda job: _assert_not_scheduled(state, job))
    for job in (past, none):
        await Eta(state)(job, call_next)
    assert call_next.jobs == [past, none]


async def test_scheduled_task_takes_no_slot_and_no_prefetch_room(
        kit: Kit, rec: RecordingHooks) -> None:
    """With one slot and a prefetch of one, a held ETA task lets a later task run first."""
    async with kit.run([rec], worker_concurrency=1, worker_prefetch_multiplier=1) as worker:
        later = await kit.add.apply_async((1, 1), countdown=0.1)
        await worker.wait_for(lambda: worker.state.scheduled)
        now = await kit.add.delay(2, 2)
        assert await worker.result(now.id) == 4
        assert len(worker.state.scheduled) == 1  # still held while the other ran
        assert await worker.result(later.id) == 2
        await worker.idle()
    assert kit.runs == [now.id, later.id]
    assert worker.broker.prefetch == 1  # the hold gave its room back


async def test_eta_task_starts_after_its_eta(kit: Kit, rec: RecordingHooks) -> None:
    """``task_started`` of a countdown task comes after its ETA, never before."""
    started: dict[str, datetime] = {}

    def probe(point: str, job: Job) -> None:
        if point == "task_started" and job.id:
            started[job.id] = datetime.now(UTC)

    rec.probe = probe
    async with kit.run([rec]) as worker:
        result = await kit.add.apply_async((1, 2), countdown=0.05)
        await worker.result(result.id)
        eta = rec.of("task_received", result.id)[0].job
        assert eta is not None and eta.message is not None and eta.message.eta is not None
        assert started[result.id] >= eta.message.eta


async def _assert_not_scheduled(state: WorkerState, job: Job) -> None:
    assert job not in state.scheduled and job.state != SCHEDULED
