"""``Caps``: per-task and per-queue concurrency caps, held for the whole run and taken
before the global slot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asyncworker.worker.admission.caps import Caps
from asyncworker.worker.job import Job
from asyncworker.worker.limits import Limits

from .helpers import Kit, Next, RecordingHooks, make_job, until


async def _peak(kit: Kit, names: list[str], expected: int) -> int:
    """Send jobs of ``names`` through ``Caps`` at once; each holds on past it until
    ``expected`` are in, then all are let go. Returns the most that were in at once."""
    release = asyncio.Event()

    async def hold(job: Job) -> None:
        await release.wait()

    call_next = Next(hold)
    caps = Caps(Limits(kit.app.settings))
    jobs = [await make_job(kit.app, name) for name in names]
    running = [asyncio.create_task(caps(job, call_next)) for job in jobs]
    await until(lambda: call_next.running >= expected)
    release.set()
    await asyncio.wait_for(asyncio.gather(*running), 1)
    assert len(call_next.jobs) == len(jobs)  # all got through in the end
    return call_next.peak


@pytest.mark.parametrize(("settings", "names", "peak"), [
    ({"worker_task_concurrency": {"t.add": 1}}, ["t.add"] * 3, 1),
    ({"worker_task_concurrency": {"t.add": 1}}, ["t.fail"] * 3, 3),
    ({"worker_queue_concurrency": {"celery": 2}}, ["t.add", "t.fail", "t.add", "t.fail"], 2),
    ({"worker_queue_concurrency": {"other": 1}}, ["t.add"] * 3, 3),
    ({"worker_task_concurrency": {"t.add": 1}, "worker_queue_concurrency": {"celery": 3}},
     ["t.add", "t.add", "t.fail", "t.fail"], 3),
], ids=["task-cap", "other-task", "queue-cap", "other-queue", "both"])
async def test_cap_bounds_jobs_running_at_once(
        kit: Kit, settings: dict[str, Any], names: list[str], peak: int) -> None:
    """At most the cap of a task (or queue) is past ``Caps`` at once; others are not held."""
    kit.app.configure(**settings)
    assert await _peak(kit, names, peak) == peak


async def test_capped_task_waits_without_a_global_slot(kit: Kit, rec: RecordingHooks) -> None:
    """With two slots and ``t.block`` capped at one, a second ``t.block`` waits at its cap
    while an unrelated task takes the free slot and finishes."""
    async with kit.run([rec], worker_concurrency=2,
                       worker_task_concurrency={"t.block": 1}) as worker:
        first = await kit.block.delay(1)
        second = await kit.block.delay(2)
        await worker.wait_for(lambda: kit.gate.entered)
        other = await kit.add.delay(1, 1)
        assert await worker.result(other.id) == 2
        assert kit.gate.entered == [first.id]
        assert [j.id for j in worker.state.reserved] == [second.id]
        kit.gate.open()
        assert await worker.result(second.id) == 2
