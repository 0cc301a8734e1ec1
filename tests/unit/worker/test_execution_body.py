"""``Body``: the end of the execution chain; awaits a coroutine task, runs a plain one in
the thread pool with ``self.request`` visible, and turns the return value into SUCCESS."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from asyncworker import Task, TimeLimitExceeded
from asyncworker.worker.execution.body import Body
from asyncworker.worker.execution.request import CurrentRequest
from asyncworker.worker.execution.timelimit import TimeLimit
from asyncworker.worker.job import SUCCESS
from asyncworker.worker.middleware import compose

from .helpers import Kit, make_job


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    """A one-thread pool for plain-function tasks (so work in it runs in order)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="unit-body")
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


async def test_coroutine_task_value_becomes_success(kit: Kit,
                                                    threads: ThreadPoolExecutor) -> None:
    """An ``async def`` task's return value is the SUCCESS outcome's value."""
    job = await make_job(kit.app, "t.add", (2, 3))
    await compose([CurrentRequest()], Body(threads))(job)
    assert job.outcome is not None
    assert (job.outcome.kind, job.outcome.value) == (SUCCESS, 5)
    assert kit.runs == [job.id]


async def test_plain_task_runs_in_the_pool_with_its_request(
        kit: Kit, threads: ThreadPoolExecutor) -> None:
    """A plain ``def`` runs in a pool thread and sees ``self.request`` (the context is copied)."""
    seen: dict[str, Any] = {}

    @kit.app.task(name="t.where", bind=True)
    def where(self: Task, x: int) -> int:
        seen.update(thread=threading.current_thread().name, request_id=self.request.id)
        return x * 2

    job = await make_job(kit.app, "t.where", (21,))
    await compose([CurrentRequest()], Body(threads))(job)
    assert job.outcome is not None and job.outcome.value == 42
    assert seen["thread"].startswith("unit-body") and seen["request_id"] == job.id


async def test_exceptions_go_up_to_the_executor(kit: Kit, threads: ThreadPoolExecutor) -> None:
    """A task that raises leaves no outcome: the exception propagates, as it is."""
    job = await make_job(kit.app, "t.fail", ("nope",))
    with pytest.raises(ValueError, match="nope"):
        await compose([CurrentRequest()], Body(threads))(job)
    assert job.outcome is None


async def test_plain_task_hard_limit_fails_at_once_and_leaves_no_stray_error(
        kit: Kit, threads: ThreadPoolExecutor) -> None:
    """At the hard limit a plain task fails with ``TimeLimitExceeded`` before its thread
    stops; the thread's own late exception is not reported as never retrieved."""

    @kit.app.task(name="t.spin")
    def spin() -> None:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            time.sleep(0.002)

    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        job = await make_job(kit.app, "t.spin", time_limit=0.05)
        with pytest.raises(TimeLimitExceeded):
            await compose([TimeLimit(), CurrentRequest()], Body(threads))(job)
        # The pool has one thread: this runs once the interrupted call has ended and
        # its outcome has been handed to the loop.
        await loop.run_in_executor(threads, lambda: None)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert [c.get("message") for c in reported] == []
