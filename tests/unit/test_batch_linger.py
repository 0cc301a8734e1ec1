"""The result writer's linger: a long task's row waits a little for company.

At a low rate of long tasks every result would otherwise be a round trip of
its own. The allowance is a share of the task's run time, capped; a full
batch, a row with no allowance, or closing the writer ends the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from asyncworker.backends.batching import BatchWriter, Linger
from asyncworker.settings import Settings


async def _turns(n: int = 5) -> None:
    """Let the flusher run ``n`` loop turns (it writes a row at once unless lingering)."""
    for _ in range(n):
        await asyncio.sleep(0)


def _writer(batches: list[list[Any]], linger: Linger, size: int = 10) -> BatchWriter:
    async def write_many(rows: Sequence[Any]) -> None:
        batches.append(list(rows))

    writer = BatchWriter(write_many, size, "test", linger=linger)
    writer.start()
    return writer


def test_allowance_is_a_share_of_the_run_time_up_to_the_limit() -> None:
    linger = Linger(ratio=0.02, limit=0.02)
    assert linger.allowance(0.0) == 0.0
    assert linger.allowance(0.1) == pytest.approx(0.002)
    assert linger.allowance(5.0) == 0.02
    assert Linger().allowance(5.0) == 0.0
    defaults = Linger.from_settings(Settings())
    assert (defaults.ratio, defaults.limit) == (0.02, 0.02)
    assert Linger.from_settings(Settings(result_batch_linger_ratio=-1.0)).allowance(1.0) == 0.0


async def test_without_linger_each_row_goes_as_soon_as_it_is_queued() -> None:
    batches: list[list[Any]] = []
    writer = _writer(batches, Linger())
    first = writer.enqueue("a", runtime=10.0)
    await _turns()
    assert first.done() and batches == [["a"]]
    await writer.submit("b", runtime=10.0)
    await writer.close()
    assert batches == [["a"], ["b"]]


async def test_a_long_tasks_row_waits_and_shares_the_next_write() -> None:
    batches: list[list[Any]] = []
    writer = _writer(batches, Linger(ratio=1.0, limit=60.0))
    first = writer.enqueue("a", runtime=10.0)
    await _turns()
    assert not first.done() and batches == []  # lingering
    second = writer.enqueue("b", runtime=10.0)
    # A row with no allowance (a task that ran no time) ends the wait for all.
    await writer.submit("c", runtime=0.0)
    assert first.done() and second.done()
    assert batches == [["a", "b", "c"]]
    await writer.close()


async def test_the_wait_ends_when_the_allowance_is_spent() -> None:
    batches: list[list[Any]] = []
    writer = _writer(batches, Linger(ratio=1.0, limit=0.05))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(10):
        await writer.submit("a", runtime=1.0)
    assert loop.time() - started >= 0.05 * 0.9  # the loop's clock, not a sleep
    assert batches == [["a"]]
    await writer.close()


async def test_a_full_batch_goes_at_once() -> None:
    batches: list[list[Any]] = []
    writer = _writer(batches, Linger(ratio=1.0, limit=60.0), size=2)
    first = writer.enqueue("a", runtime=10.0)
    await _turns()
    assert not first.done()
    await writer.submit("b", runtime=10.0)
    assert batches == [["a", "b"]]
    await writer.close()


async def test_closing_writes_lingering_rows_without_waiting_them_out() -> None:
    batches: list[list[Any]] = []
    writer = _writer(batches, Linger(ratio=1.0, limit=60.0))
    pending = writer.enqueue("a", runtime=10.0)
    await _turns()
    async with asyncio.timeout(10):
        await writer.close()
    assert pending.done() and batches == [["a"]]


def test_on_uvloop_a_wait_shorter_than_its_clock_tick_is_no_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop's clock moves in whole milliseconds: lingering 0.4 ms would wake
    with no time passed, over and over, until the tick (a busy loop)."""
    uvloop = pytest.importorskip("uvloop")
    waits: list[float | None] = []
    timeout = asyncio.timeout

    def counted(delay: float | None) -> asyncio.Timeout:
        waits.append(delay)
        return timeout(delay)

    monkeypatch.setattr(asyncio, "timeout", counted)

    async def run() -> None:
        batches: list[list[Any]] = []
        writer = _writer(batches, Linger(ratio=1.0, limit=0.0004))
        await writer.submit("a", runtime=1.0)
        writer_long = _writer(batches, Linger(ratio=1.0, limit=0.05))
        await writer_long.submit("b", runtime=1.0)
        await writer.close()
        await writer_long.close()
        assert batches == [["a"], ["b"]]

    uvloop.run(run())
    # No wait for the first row; a few for the second (the clock's rounding).
    assert 1 <= len(waits) <= 3
    assert all(w is not None and w > 0.001 for w in waits)
