"""Pure pieces of task semantics, in-process."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from asyncworker import App, SoftTimeLimitExceeded, TimeLimitExceeded
from asyncworker.canvas import _takes_request
from asyncworker.control.revoked import RevokedSet
from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.worker.limits import TokenBucket, parse_rate
from asyncworker.worker.retry import backoff_countdown
from asyncworker.worker.timelimits import run_coroutine


@pytest.mark.parametrize(("text", "per_second"), [
    ("10/s", 10.0), ("120/m", 2.0), ("36/h", 0.01), ("5", 5.0), (3, 3.0), ("0/s", None),
    (None, None),
])
def test_parse_rate(text: Any, per_second: float | None) -> None:
    assert parse_rate(text) == per_second


def test_parse_rate_rejects_garbage() -> None:
    with pytest.raises(ImproperlyConfigured):
        parse_rate("ten per second")


def test_backoff_without_jitter_is_celerys_formula() -> None:
    assert [backoff_countdown(1, n, 600, False) for n in range(5)] == [1, 2, 4, 8, 16]
    assert backoff_countdown(3, 10, 600, False) == 600
    assert backoff_countdown(True, 2, 600, False) == 4  # True counts as factor 1


def test_backoff_jitter_stays_within_bounds() -> None:
    values = {backoff_countdown(2, 3, 600, True) for _ in range(300)}
    assert values <= set(range(17)) and len(values) > 5


async def test_token_bucket_spaces_callers() -> None:
    bucket = TokenBucket(20.0)
    loop = asyncio.get_running_loop()
    starts = []

    async def one() -> None:
        await bucket.wait()
        starts.append(loop.time())

    await asyncio.gather(*(one() for _ in range(5)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.045 for gap in gaps), gaps


def test_revoked_set_expires_and_is_bounded() -> None:
    revoked = RevokedSet(ttl=10, limit=3)
    now = time.time()
    revoked.add("old", now - 20)
    revoked.add("a", now)
    assert "old" not in revoked and "a" in revoked
    for name in "bcd":
        revoked.add(name, now)
    assert "a" not in revoked and set(revoked.ids()) == {"b", "c", "d"}


async def test_soft_limit_is_raised_inside_the_coroutine() -> None:
    async def body() -> str:
        try:
            await asyncio.sleep(5)
        except SoftTimeLimitExceeded:
            await asyncio.sleep(0.01)
            return "cleaned"
        return "not interrupted"

    assert await run_coroutine(body(), soft=0.05, hard=None) == "cleaned"


async def test_hard_limit_cancels_only_that_task() -> None:
    async def stuck() -> None:
        await asyncio.sleep(5)

    neighbour = asyncio.create_task(asyncio.sleep(0.2, result="ok"))
    with pytest.raises(TimeLimitExceeded):
        await run_coroutine(stuck(), soft=None, hard=0.05)
    assert await neighbour == "ok"


async def test_outer_cancellation_is_not_a_time_limit() -> None:
    async def stuck() -> None:
        await asyncio.sleep(5)

    task = asyncio.create_task(run_coroutine(stuck(), soft=None, hard=10))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_new_style_errback_detection() -> None:
    app = App("unit")

    @app.task(name="e.old")
    def old(task_id: str) -> None: ...

    @app.task(name="e.old_with_arg")
    def old_with_arg(task_id: str, key: str) -> None: ...

    @app.task(name="e.new")
    def new(request: Any, exc: Any, traceback: Any) -> None: ...

    assert not _takes_request(old, {"task": "e.old", "args": []})
    assert not _takes_request(old_with_arg, {"task": "e.old_with_arg", "args": ["k"]})
    assert _takes_request(new, {"task": "e.new", "args": []})
