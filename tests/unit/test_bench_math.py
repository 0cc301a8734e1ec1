"""The benchmark's arithmetic: steady-state rate and percentiles."""

from __future__ import annotations

from datetime import datetime, timedelta

from bench.measure import percentile
from bench.run import steady_rate


def test_steady_rate_ignores_a_stall_at_the_start() -> None:
    start = datetime(2026, 1, 1)
    # 1,000 completions at 100/s, after a 30 s stall before the first few.
    done = [start] * 5 + [start + timedelta(seconds=30 + i / 100) for i in range(995)]
    assert 99 <= steady_rate(done) <= 101
    first_to_last = (len(done) - 1) / (done[-1] - done[0]).total_seconds()
    assert first_to_last < 30  # what a first-to-last figure would have said


def test_steady_rate_small_and_degenerate() -> None:
    start = datetime(2026, 1, 1)
    assert steady_rate([]) == 0.0
    assert steady_rate([start]) == 0.0
    assert steady_rate([start, start]) == 0.0
    assert steady_rate([start, start + timedelta(seconds=2)]) == 0.5


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0
