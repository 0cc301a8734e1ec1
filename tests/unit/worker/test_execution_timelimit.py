"""``TimeLimit``: resolves ``[hard, soft]`` (header > task option > setting) and enforces
them around coroutine tasks; plain functions get theirs from the body."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from asyncworker import SoftTimeLimitExceeded, Task, TimeLimitExceeded, states
from asyncworker.worker.execution.timelimit import TimeLimit
from asyncworker.worker.job import Job

from .helpers import Kit, Next, RecordingHooks, make_job


async def _sleep(job: Job) -> None:
    await asyncio.sleep(5)


@pytest.mark.parametrize(("settings", "task_options", "message_options", "expected"), [
    ({}, {}, {}, (None, None)),
    ({"task_time_limit": 7.0, "task_soft_time_limit": 6.0}, {}, {}, (7.0, 6.0)),
    ({"task_time_limit": 7.0}, {"time_limit": 5.0, "soft_time_limit": 4.0}, {}, (5.0, 4.0)),
    ({}, {"time_limit": 5.0, "soft_time_limit": 4.0},
     {"time_limit": 3.0, "soft_time_limit": 2.0}, (3.0, 2.0)),
    ({}, {"time_limit": 5.0, "soft_time_limit": 4.0}, {"time_limit": 3.0}, (3.0, 4.0)),
], ids=["none", "settings", "task-over-settings", "header-over-task", "header-hard-only"])
async def test_limits_are_resolved_header_then_task_then_settings(
        kit: Kit, settings: dict[str, Any], task_options: dict[str, Any],
        message_options: dict[str, Any], expected: tuple[float | None, float | None]) -> None:
    """``job.time_limits`` is what the header, else the task, else the settings say."""
    kit.app.configure(**settings)

    @kit.app.task(name="t.limited", **task_options)
    async def limited() -> None:
        return None

    job = await make_job(kit.app, "t.limited", **message_options)
    call_next = Next()
    await TimeLimit()(job, call_next)
    assert call_next.jobs == [job]
    assert job.time_limits == expected


async def test_hard_limit_stops_a_coroutine_with_time_limit_exceeded(kit: Kit) -> None:
    """Past the hard limit the rest of the chain is cancelled: ``TimeLimitExceeded``."""
    job = await make_job(kit.app, "t.sleep", (5,), time_limit=0.05)
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        await TimeLimit()(job, Next(_sleep))
    assert time.monotonic() - started < 2


async def test_soft_limit_is_raised_inside_and_may_be_handled(kit: Kit) -> None:
    """The soft limit raises ``SoftTimeLimitExceeded`` where the chain awaits; it may return."""
    caught: list[BaseException] = []

    async def tolerant(job: Job) -> None:
        try:
            await asyncio.sleep(5)
        except SoftTimeLimitExceeded as exc:
            caught.append(exc)

    job = await make_job(kit.app, "t.sleep", (5,), soft_time_limit=0.05, time_limit=2)
    await TimeLimit()(job, Next(tolerant))
    assert len(caught) == 1


async def test_plain_function_tasks_are_left_to_the_body(kit: Kit) -> None:
    """For a plain ``def`` task the limits are only recorded: the chain is not interrupted."""
    finished: list[Job] = []

    async def slow(job: Job) -> None:
        await asyncio.sleep(0.08)
        finished.append(job)

    job = await make_job(kit.app, "t.sync_add", (1, 2), time_limit=0.02)
    await TimeLimit()(job, Next(slow))
    assert finished == [job] and job.time_limits == (0.02, None)


async def test_worker_fails_a_task_past_its_hard_limit_without_touching_others(
        kit: Kit, rec: RecordingHooks) -> None:
    """In a worker: FAILURE ``TimeLimitExceeded`` stored, ``task_failed``, message acked,
    while a task running beside it completes."""
    async with kit.run([rec]) as worker:
        slow = await kit.sleep.apply_async((5,), time_limit=0.05)
        beside = await kit.sleep.delay(0.1)
        stored = await worker.stored(slow.id)
        assert await worker.result(beside.id) == 0.1
        await worker.idle()
    assert stored.state == states.FAILURE
    assert stored.result["exc_type"] == "TimeLimitExceeded"
    assert rec.closings(slow.id) == ["task_failed"]
    assert rec.closings(beside.id) == ["task_succeeded"]
    assert slow.id in [d.headers["id"] for d in worker.broker.acked]


async def test_worker_soft_limit_lets_the_task_clean_up_and_return(
        kit: Kit, rec: RecordingHooks) -> None:
    """A coroutine task catching ``SoftTimeLimitExceeded`` returns its value: SUCCESS."""

    @kit.app.task(name="t.tidy", soft_time_limit=0.05)
    async def tidy() -> str:
        try:
            await asyncio.sleep(5)
        except SoftTimeLimitExceeded:
            return "cleaned"
        return "not interrupted"

    async with kit.run([rec]) as worker:
        result = await tidy.delay()
        assert await worker.result(result.id) == "cleaned"


def _spin(seconds: float) -> str:
    """Run Python bytecode (interruptible) for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.002)
    return "ran out"


async def test_worker_limits_plain_function_tasks_in_their_thread(
        kit: Kit, rec: RecordingHooks) -> None:
    """A plain ``def`` task: the soft limit lands in its thread, the hard limit fails it."""

    @kit.app.task(name="t.sync_soft", bind=True, soft_time_limit=0.05)
    def sync_soft(self: Task) -> str:
        try:
            return _spin(2)
        except SoftTimeLimitExceeded:
            return f"soft in {self.request.id}"

    @kit.app.task(name="t.sync_hard", time_limit=0.05)
    def sync_hard() -> str:
        return _spin(2)

    async with kit.run([rec]) as worker:
        soft = await sync_soft.delay()
        hard = await sync_hard.delay()
        assert await worker.result(soft.id) == f"soft in {soft.id}"
        stored = await worker.stored(hard.id)
    assert (stored.state, stored.result["exc_type"]) == (states.FAILURE, "TimeLimitExceeded")
    assert rec.closings(hard.id) == ["task_failed"]
