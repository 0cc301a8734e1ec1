"""``asyncworker.testing`` as a user's test suite uses it: the ``worker`` fixture and ``apply``."""

from __future__ import annotations

import asyncio

import pytest

from asyncworker import App, SoftTimeLimitExceeded, Task, TimeLimitExceeded, states
from asyncworker.testing import TestWorker, apply, worker  # noqa: F401 - the fixture

app = App("testing-demo")
attempts: list[int] = []


@app.task(name="demo.add")
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="demo.flaky", bind=True, max_retries=3)
async def flaky(self: Task) -> int:
    attempts.append(self.request.retries)
    if self.request.retries < 2:
        raise self.retry(countdown=60)  # eager: at once, not in a minute
    return self.request.retries


@app.task(name="demo.slow", time_limit=0.05)
async def slow() -> None:
    await asyncio.sleep(5)


@app.task(name="demo.soft", soft_time_limit=0.05)
async def soft() -> str:
    try:
        await asyncio.sleep(5)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "finished"


@app.task(name="demo.double")
def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def asyncworker_app() -> App:
    return app


async def test_worker_fixture_runs_tasks_published_by_the_app(
        worker: TestWorker) -> None:  # noqa: F811 - the imported fixture
    result = await add.delay(2, 3)
    assert await worker.result(result.id) == 5
    await worker.idle()
    assert worker.state.counts["succeeded"] == 1
    assert [d.headers["id"] for d in worker.broker.acked] == [result.id]


async def test_apply_runs_in_place_with_retries_at_once() -> None:
    attempts.clear()
    result = await flaky.apply()
    assert (result.state, result.get(), result.retries) == (states.SUCCESS, 2, 2)
    assert attempts == [0, 1, 2]


async def test_apply_enforces_time_limits_and_reports_failures() -> None:
    failed = await slow.apply()
    assert failed.state == states.FAILURE and isinstance(failed.result, TimeLimitExceeded)
    with pytest.raises(TimeLimitExceeded):
        failed.get()
    with pytest.raises(TimeLimitExceeded):
        await apply(slow, throw=True)
    assert (await soft.apply()).get() == "cleaned up"


async def test_apply_runs_plain_functions_too() -> None:
    assert (await double.apply([21])).get() == 42
