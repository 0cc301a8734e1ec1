"""Hundreds of waiting tasks in one process, never more than -c at once."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at t closes before a start at t)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda p: (p[0], p[1]))
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


def test_max_overlap_helper() -> None:
    assert max_overlap([(0, 1), (1, 2)]) == 1
    assert max_overlap([(0, 2), (1, 3), (1.5, 1.7)]) == 3


def test_200_sleeping_tasks_with_c50(celery_app: Any, start_worker: Any, queue_name: str) -> None:
    start_worker("-Q", queue_name, "-c", "50")
    results = [celery_app.send_task("compat.sleep", [1.0], queue=queue_name) for _ in range(200)]
    spans = [r.get(timeout=120, interval=0.1) for r in results]
    intervals = [(s["start"], s["end"]) for s in spans]
    assert all(end - start >= 1.0 for start, end in intervals)
    # Exactly the configured bound: full use of the slots, never more.
    assert max_overlap(intervals) == 50
    # Mean parallelism from the recorded times: busy time over the whole span.
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    busy = sum(e - s for s, e in intervals)
    assert busy / span > 25, f"mean parallelism {busy / span:.1f}"
