"""Stores that live beside the result backend, in the same database.

The worker keeps a few records of its own next to ``celery_taskmeta``: start
markers and leases (``worker_lost/store.py``), parked tasks
(``parked/store.py``). Each writes through a ``BatchWriter`` (so a burst costs
a round trip per batch, and transient database errors are retried), opens a
small pool of its own on PostgreSQL, and on a stop waits a few seconds at most
for what is queued: these records help, but the tasks never depend on them.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from ..logging import get_logger, redact_url
from .batching import BatchWriter

log = get_logger("backend.side")

#: Seconds a stopping worker waits for queued writes, and for a pool to close.
CLOSE_WAIT = 5.0


class SideStore(abc.ABC):
    """A store whose writes are batched; subclasses connect and write."""

    #: What is dropped when a stop cannot wait (the log line's subject).
    subject = "records"

    def __init__(self, batch_size: int, describe: str) -> None:
        self.describe = describe
        self.writer = BatchWriter(self._write_many, batch_size, describe, what=self.subject)

    async def setup(self) -> None:
        """Connect, prepare storage and start the batch writer."""
        await self._setup()
        self.writer.start()

    async def close(self, timeout: float = CLOSE_WAIT) -> None:
        """Write what is queued, for ``timeout`` seconds at most, and disconnect."""
        try:
            await asyncio.wait_for(self.writer.close(), timeout)
        except TimeoutError:
            log.warning(f"{self.subject} not written before the stop; dropped",
                        store=self.describe)
        await self._close()

    @abc.abstractmethod
    async def _setup(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _write_many(self, ops: Sequence[Any]) -> None: ...


async def open_pool(dsn: str, *ddl: str) -> Any:
    """A small asyncpg pool, with ``ddl`` run once under the shared DDL lock
    (workers starting together must not race on ``CREATE TABLE``)."""
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, command_timeout=30)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('asyncworker-ddl'))")
        for statement in ddl:
            await conn.execute(statement)
    return pool


async def close_pool(pool: Any) -> None:
    """Close ``pool``, or terminate it when its connections do not return in time."""
    if pool is None:
        return
    try:
        await asyncio.wait_for(pool.close(), CLOSE_WAIT)
    except TimeoutError:
        pool.terminate()


class PostgresSideStore(SideStore):
    """A side store on PostgreSQL: a small pool, and ``tables`` created at setup."""

    #: The DDL run at setup (``CREATE ... IF NOT EXISTS``).
    tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dsn: str, batch_size: int) -> None:
        super().__init__(batch_size, redact_url(dsn))
        self.dsn = dsn
        self._pool: Any = None

    async def _setup(self) -> None:
        self._pool = await open_pool(self.dsn, *self.tables)

    async def _close(self) -> None:
        await close_pool(self._pool)
        self._pool = None
