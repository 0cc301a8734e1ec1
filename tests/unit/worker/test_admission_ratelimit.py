"""``RateLimit``: a task's rate limit spaces its starts, and a throttled task waits
without holding a concurrency slot."""

from __future__ import annotations

import asyncio

from asyncworker import App
from asyncworker.worker.admission.ratelimit import RateLimit
from asyncworker.worker.job import Job
from asyncworker.worker.limits import Limits

from .helpers import Kit, Next, RecordingHooks, make_job

# 20/s: one start per 50 ms.
RATE, INTERVAL = "20/s", 0.05


def _assert_spaced(times: list[float], t0: float) -> None:
    """The k-th start (from 0) came no earlier than ``t0 + k * INTERVAL``: a lower bound
    only, so a slow loop cannot fail it, while a missing or loose limit does."""
    early = [(k, round(t - t0, 4)) for k, t in enumerate(times) if t - t0 < k * INTERVAL - 0.001]
    assert not early, early


def _limited(app: App, name: str = "t.limited", rate: str | None = RATE) -> None:
    @app.task(name=name, rate_limit=rate)
    async def limited() -> None:
        return None


async def _through(limits: Limits, jobs: list[Job]) -> tuple[Next, float]:
    """All ``jobs`` through one ``RateLimit`` at once; the recorder and the start time."""
    call_next, gate = Next(), RateLimit(limits)
    t0 = asyncio.get_running_loop().time()
    await asyncio.gather(*(gate(job, call_next) for job in jobs))
    return call_next, t0


async def test_starts_are_spaced_by_the_task_rate(kit: Kit) -> None:
    """Four jobs of a 20/s task pass one per 50 ms, in arrival order."""
    _limited(kit.app)
    jobs = [await make_job(kit.app, "t.limited") for _ in range(4)]
    call_next, t0 = await _through(Limits(kit.app.settings), jobs)
    assert call_next.jobs == jobs
    _assert_spaced(call_next.times, t0)


async def test_unlimited_tasks_are_not_held_behind_a_limited_one(kit: Kit) -> None:
    """Jobs of a task without a limit pass while a limited task's second job waits."""
    _limited(kit.app)
    jobs = [await make_job(kit.app, name) for name in
            ("t.limited", "t.limited", "t.add", "t.add")]
    call_next, _ = await _through(Limits(kit.app.settings), jobs)
    assert [j.name for j in call_next.jobs] == ["t.limited", "t.add", "t.add", "t.limited"]


async def test_default_rate_limit_applies_to_tasks_without_one(kit: Kit) -> None:
    """``task_default_rate_limit`` throttles a task that sets no ``rate_limit`` itself."""
    kit.app.configure(task_default_rate_limit=RATE)
    jobs = [await make_job(kit.app, "t.add", (1, 2)) for _ in range(3)]
    call_next, t0 = await _through(Limits(kit.app.settings), jobs)
    _assert_spaced(call_next.times, t0)


async def test_worker_spaces_task_starts(kit: Kit, rec: RecordingHooks) -> None:
    """In a worker: the k-th ``task_started`` of a 20/s task is at least k intervals in."""
    _limited(kit.app)
    loop = asyncio.get_running_loop()
    rec.probe = lambda point, job: loop.time()
    async with kit.run([rec]) as worker:
        t0 = loop.time()
        ids = [(await kit.app.send_task("t.limited")).id for _ in range(4)]
        await worker.wait_for(lambda: all(rec.closed(i) for i in ids))
    starts = [c.probe for c in rec.of("task_started")]
    assert len(starts) == 4
    _assert_spaced(starts, t0)


async def test_throttled_task_holds_no_slot(kit: Kit, rec: RecordingHooks) -> None:
    """With one slot, a task published after a throttled one runs before it."""
    _limited(kit.app, "t.slow", "10/s")
    async with kit.run([rec], worker_concurrency=1) as worker:
        first = await kit.app.send_task("t.slow")
        second = await kit.app.send_task("t.slow")
        other = await kit.add.delay(1, 1)
        await worker.wait_for(lambda: rec.closed(second.id))
        await worker.idle()
    order = [c.task_id for c in rec.of("task_started")]
    assert order == [first.id, other.id, second.id]
