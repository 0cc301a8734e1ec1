"""Freezing the start-up heap: garbage is collected first, and only a worker that
owns its process freezes (an embedded or test worker leaves the heap alone)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from asyncworker import App
from asyncworker.testing import run_worker
from asyncworker.worker.heap import freeze_startup_heap


class _Node:
    other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freeze_collects_garbage_first_then_freezes_the_rest(unfrozen: None) -> None:
    kept = _Node()
    cycle = _Node()
    cycle.other = _Node()
    cycle.other.other = cycle  # only the cycle collector can free it
    dead = weakref.ref(cycle)
    del cycle
    frozen = freeze_startup_heap()
    assert dead() is None  # collected, not frozen for good
    assert frozen == gc.get_freeze_count() > 1000
    assert not any(o is kept for o in gc.get_objects())  # moved out of every generation


async def test_an_embedded_worker_leaves_the_heap_alone(unfrozen: None) -> None:
    app = App("embedded", worker_gc_freeze=True)
    async with run_worker(app) as worker:
        assert worker.worker.ready.is_set()  # past the point where a CLI worker freezes
        assert gc.get_freeze_count() == 0
