"""The worker-lost marker and lease stores on the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from asyncworker.worker_lost.store import Marker, create
from tests.conftest import PG_DSN, REDIS_URL

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["db+" + PG_DSN, REDIS_URL])
async def test_markers_and_leases(services: dict[str, str], backend: str) -> None:
    store = create(backend, 100)
    assert store is not None
    await store.setup()
    try:
        me, other = f"me-{uuid.uuid4()}", f"other-{uuid.uuid4()}"
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        # Starts in one batch; then a release of one, by its owner only.
        await asyncio.gather(store.start(a, me, 0, False), store.start(b, me, 2, True))
        assert await store.get(a) == Marker(me, 0, False)
        assert await store.get(b) == Marker(me, 2, True)
        await store.release_now(a, other)
        assert await store.get(a) == Marker(me, 0, False)
        await store.release_now(a, me)
        assert await store.get(a) is None
        # A recorded death: nobody runs it; then forgotten for good.
        await store.start(b, None, 3, False)
        assert await store.get(b) == Marker(None, 3, False)
        await store.forget(b)
        assert await store.get(b) is None
        # Leases: fresh after a refresh, None once dropped or lapsed.
        await store.refresh(me, 30)
        first = await store.lease(me, 30)
        assert first is not None
        await store.refresh(me, 30)
        second = await store.lease(me, 30)
        assert second is not None and second > first
        await store.drop_lease(me)
        assert await store.lease(me, 30) is None
        await store.refresh(other, 0.2)
        assert await store.lease(other, 0.2) is not None
        deadline = asyncio.get_running_loop().time() + 5
        while await store.lease(other, 0.2) is not None:  # lapses by itself
            assert asyncio.get_running_loop().time() < deadline, "lease never lapsed"
            await asyncio.sleep(0.05)
        # A background release is written by close at the latest.
        await store.start(a, me, 0, False)
        store.release(a, me)
    finally:
        await store.close()
    again = create(backend, 100)
    assert again is not None
    await again.setup()
    try:
        assert await again.get(a) is None
        await again.sweep()
    finally:
        await again.close()
