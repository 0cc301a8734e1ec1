"""The parked-task record store on the real PostgreSQL and Redis."""

from __future__ import annotations

import time
import uuid

import pytest

from asyncworker.parked.store import SWEEP_AFTER, ParkedTask, create
from tests.conftest import PG_DSN, REDIS_URL

pytestmark = pytest.mark.integration


def record(task_id: str, node: str, returns_at: float, eta: str) -> ParkedTask:
    return ParkedTask(task_id, node, returns_at,
                      {"eta": eta, "priority": 0, "request": {"id": task_id, "args": [1]}})


@pytest.mark.parametrize("backend", ["db+" + PG_DSN, REDIS_URL])
async def test_records_are_durable_and_follow_the_last_park(
        services: dict[str, str], backend: str) -> None:
    now = time.time()
    me, other = f"me-{uuid.uuid4()}@h", f"other-{uuid.uuid4()}@h"
    a, b, c, lapsed = (str(uuid.uuid4()) for _ in range(4))
    store = create(backend, 100)
    await store.setup()
    try:
        store.put(record(b, me, now + 200, "2030-01-01T00:00:00+00:00"))
        store.put(record(a, me, now + 100, "2029-01-01T00:00:00+00:00"))
        # Parked again by another node: the record moves with it.
        store.put(record(c, me, now + 50, "2028-01-01T00:00:00+00:00"))
        store.put(record(c, other, now + 300, "2028-01-01T00:00:00+00:00"))
        # Came back already: no longer parked.
        store.put(record(lapsed, me, now - 1, "2027-01-01T00:00:00+00:00"))
    finally:
        await store.close()  # writes what is queued
    # A new instance (a restarted worker) reads what the first one wrote.
    again = create(backend, 100)
    await again.setup()
    try:
        mine = await again.listing(me, now)
        assert [r.task_id for r in mine] == [a, b]  # soonest return first
        assert mine[0].entry == {"eta": "2029-01-01T00:00:00+00:00", "priority": 0,
                                 "request": {"id": a, "args": [1]}}
        assert mine[0].returns_at == pytest.approx(now + 100)
        assert [r.task_id for r in await again.listing(other, now)] == [c]
        # Past their return, records say nothing, and are swept an hour later.
        assert await again.listing(me, now + 150) == [record(b, me, now + 200, mine[1].entry[
            "eta"])]
        assert await again.listing(me, now + 250 + SWEEP_AFTER) == []
        assert await again.listing(me, now) == []  # swept for good
    finally:
        await again.close()
