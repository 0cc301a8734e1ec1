"""``CurrentRequest``: ``self.request`` / ``current_request()`` is the job's request while
the rest of the chain runs, and only then."""

from __future__ import annotations

import asyncio

import pytest

from asyncworker import Task
from asyncworker.task import current_request, reset_current_request, set_current_request
from asyncworker.worker.execution.request import CurrentRequest
from asyncworker.worker.job import Job

from .helpers import Kit, Next, RecordingHooks, make_job


async def test_request_is_current_inside_and_reset_after(kit: Kit) -> None:
    """Inside ``call_next`` the job's request is current (and ``task.request``); after, the
    previous value is back."""
    seen: list[object] = []

    async def look(job: Job) -> None:
        seen.extend([current_request(), kit.add.request])

    job = await make_job(kit.app, "t.add", (1, 2))
    assert current_request() is None
    await CurrentRequest()(job, Next(look))
    assert seen == [job.request, job.request]
    assert current_request() is None


async def test_request_is_reset_when_the_chain_raises(kit: Kit) -> None:
    """An exception from the chain still restores the outer request."""
    outer = (await make_job(kit.app, "t.sleep", (1,))).request
    token = set_current_request(outer)

    async def explode(job: Job) -> None:
        raise RuntimeError("boom")

    try:
        with pytest.raises(RuntimeError):
            await CurrentRequest()(await make_job(kit.app, "t.add", (1, 2)), Next(explode))
        assert current_request() is outer
    finally:
        reset_current_request(token)


async def test_concurrent_tasks_each_see_their_own_request(
        kit: Kit, rec: RecordingHooks) -> None:
    """In a worker, tasks interleaving at awaits each read their own ``self.request``."""
    seen: dict[str, list[str]] = {}

    @kit.app.task(name="t.who", bind=True)
    async def who(self: Task, tag: str) -> None:
        seen[tag] = [self.request.id]
        await kit.gate.wait(tag)
        await asyncio.sleep(0)
        seen[tag].append(self.request.id)

    async with kit.run([rec]) as worker:
        ids = {tag: (await who.delay(tag)).id for tag in ("a", "b", "c")}
        await worker.wait_for(lambda: len(kit.gate.entered) == 3)
        kit.gate.open()
        await worker.wait_for(lambda: all(rec.closed(i) for i in ids.values()))
    assert seen == {tag: [task_id, task_id] for tag, task_id in ids.items()}
