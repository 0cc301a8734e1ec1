"""``Slot``: the global concurrency limit (``worker_concurrency``), held for the run."""

from __future__ import annotations

import asyncio

import pytest

from asyncworker.worker.admission.slot import Slot
from asyncworker.worker.job import Job

from .helpers import Kit, Next, RecordingHooks, make_job, until


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_at_most_concurrency_jobs_past_the_slot(kit: Kit, concurrency: int) -> None:
    """Five jobs through ``Slot(n)``: n go on at once, the rest follow as slots free up."""
    release = asyncio.Event()

    async def hold(job: Job) -> None:
        await release.wait()

    call_next, slot = Next(hold), Slot(concurrency)
    jobs = [await make_job(kit.app, "t.add", (i, i)) for i in range(5)]
    running = [asyncio.create_task(slot(job, call_next)) for job in jobs]
    await until(lambda: call_next.running >= concurrency)
    assert len(call_next.jobs) == concurrency
    release.set()
    await asyncio.wait_for(asyncio.gather(*running), 1)
    assert call_next.jobs == jobs and call_next.peak == concurrency


async def test_slot_is_released_when_the_rest_raises(kit: Kit) -> None:
    """A job that fails past the slot gives it back."""

    async def explode(job: Job) -> None:
        raise RuntimeError("boom")

    slot = Slot(1)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await slot(await make_job(kit.app, "t.add", (1, 1)), Next(explode))
    assert not slot.semaphore.locked()


async def test_worker_runs_at_most_concurrency_tasks(kit: Kit, rec: RecordingHooks) -> None:
    """In a worker with two slots, five blocked tasks: two active, three reserved."""
    async with kit.run([rec], worker_concurrency=2) as worker:
        ids = [(await kit.block.delay(i)).id for i in range(5)]
        await worker.wait_for(lambda: len(worker.state.reserved) == 3)
        assert len(kit.gate.entered) == 2 and len(worker.state.active) == 2
        assert set(worker.state.active) == set(kit.gate.entered)
        kit.gate.open()
        results = [await worker.result(i) for i in ids]
    assert results == [0, 1, 2, 3, 4]
    assert len(rec.of("task_succeeded")) == 5
