"""Where parked tasks are recorded: PostgreSQL, Redis or memory.

A record is one ``inspect scheduled`` entry (``eta``, ``priority``,
``request``, plus where it is parked), keyed by task id, with the node that
parked it and ``returns_at``, the time the broker brings the message back.
A record whose ``returns_at`` has passed says nothing any more: the message
is back in its queue, held by a worker (which lists it from memory) or parked
again (which replaces the record, perhaps under another node). So records are
never deleted one by one on the hot path; listing skips the lapsed ones and a
sweep drops them an hour later.

The store sits beside the result backend, in the same database: the table
``asyncworker_parked`` or one Redis hash per node,
``asyncworker-parked-<node>``. Records are written through a ``BatchWriter``,
so parking many tasks at once costs a round trip per batch, and a database
outage delays the record (retried with backoff) without holding the task.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backends import normalize_url
from ..backends.side import PostgresSideStore, SideStore
from ..logging import get_logger, redact_url

log = get_logger("parked")

#: Lapsed records are swept this many seconds after their return.
SWEEP_AFTER = 3600.0


@dataclass(slots=True, frozen=True)
class ParkedTask:
    """One parked task, as recorded."""

    task_id: str
    node: str
    returns_at: float
    entry: dict[str, Any]

    def encode(self) -> str:
        # Arguments a non-JSON serializer decoded are shown by their repr.
        return json.dumps(self.entry, default=repr)


def latest(records: Sequence[ParkedTask]) -> dict[str, ParkedTask]:
    """The last record per task id, in batch order (a later park wins)."""
    return {record.task_id: record for record in records}


class ParkedStore(SideStore):
    """Records of parked tasks; ``put`` is batched, ``listing`` reads one node's.

    A record is only what ``inspect scheduled`` shows; the parked message itself
    is safe in the broker, so a stopping worker does not wait long to write it.
    """

    subject = "parked-task records"

    def put(self, record: ParkedTask) -> None:
        """Record (or replace) a parked task, with the next batch."""
        self.writer.post(record)

    @abc.abstractmethod
    async def listing(self, node: str, now: float | None = None) -> list[ParkedTask]:
        """``node``'s records whose message has not come back yet, soonest first."""



def _pending(records: Sequence[ParkedTask], now: float | None) -> list[ParkedTask]:
    moment = time.time() if now is None else now
    return sorted((r for r in records if r.returns_at > moment), key=lambda r: r.returns_at)


class MemoryParkedStore(ParkedStore):
    """In one process: no result backend, or the in-memory one (tests)."""

    def __init__(self) -> None:
        super().__init__(100, "memory")
        self.records: dict[str, ParkedTask] = {}

    async def _setup(self) -> None:
        return None

    async def _close(self) -> None:
        return None

    async def _write_many(self, records: Sequence[ParkedTask]) -> None:
        self.records.update(latest(records))

    async def listing(self, node: str, now: float | None = None) -> list[ParkedTask]:
        return _pending([r for r in self.records.values() if r.node == node], now)


_TABLES = ("""CREATE TABLE IF NOT EXISTS asyncworker_parked (
    task_id VARCHAR(155) PRIMARY KEY,
    node VARCHAR(255) NOT NULL,
    returns_at DOUBLE PRECISION NOT NULL,
    entry TEXT NOT NULL)""",
           "CREATE INDEX IF NOT EXISTS asyncworker_parked_node "
           "ON asyncworker_parked (node, returns_at)")


class PostgresParkedStore(PostgresSideStore, ParkedStore):
    """A table next to ``celery_taskmeta``."""

    tables = _TABLES

    async def _write_many(self, records: Sequence[ParkedTask]) -> None:
        rows = list(latest(records).values())
        # One statement per batch; an upsert, so a retried batch changes nothing.
        await self._pool.execute(
            "INSERT INTO asyncworker_parked AS p (task_id, node, returns_at, entry) "
            "SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::float8[], $4::text[]) "
            "ON CONFLICT (task_id) DO UPDATE SET node = EXCLUDED.node, "
            "returns_at = EXCLUDED.returns_at, entry = EXCLUDED.entry",
            [r.task_id for r in rows], [r.node for r in rows],
            [r.returns_at for r in rows], [r.encode() for r in rows])

    async def listing(self, node: str, now: float | None = None) -> list[ParkedTask]:
        moment = time.time() if now is None else now
        await self._pool.execute("DELETE FROM asyncworker_parked WHERE returns_at < $1",
                                 moment - SWEEP_AFTER)
        rows = await self._pool.fetch(
            "SELECT task_id, returns_at, entry FROM asyncworker_parked "
            "WHERE node = $1 AND returns_at > $2 ORDER BY returns_at", node, moment)
        return [ParkedTask(row["task_id"], node, row["returns_at"], json.loads(row["entry"]))
                for row in rows]


class RedisParkedStore(ParkedStore):
    """One hash per node: task id -> ``{"returns_at": ..., "entry": ...}``."""

    PREFIX = "asyncworker-parked-"

    def __init__(self, url: str, batch_size: int) -> None:
        import redis.asyncio as aioredis

        super().__init__(batch_size, redact_url(url))
        self.client: Any = aioredis.from_url(url)

    async def _setup(self) -> None:
        return None

    async def _close(self) -> None:
        await self.client.aclose()

    async def _write_many(self, records: Sequence[ParkedTask]) -> None:
        now = time.time()
        async with self.client.pipeline(transaction=False) as pipe:
            for record in latest(records).values():
                key = self.PREFIX + record.node
                pipe.hset(key, record.task_id, json.dumps(
                    {"returns_at": record.returns_at, "entry": json.loads(record.encode())}))
                # A node that never comes back leaves nothing behind for long.
                pipe.expire(key, int(record.returns_at - now + SWEEP_AFTER), gt=True)
                pipe.expire(key, int(record.returns_at - now + SWEEP_AFTER), nx=True)
            await pipe.execute()

    async def listing(self, node: str, now: float | None = None) -> list[ParkedTask]:
        moment = time.time() if now is None else now
        key = self.PREFIX + node
        found, lapsed = [], []
        for task_id, raw in (await self.client.hgetall(key)).items():
            data = json.loads(raw)
            record = ParkedTask(task_id.decode(), node, float(data["returns_at"]),
                                data["entry"])
            found.append(record)
            if record.returns_at < moment - SWEEP_AFTER:
                lapsed.append(task_id)
        if lapsed:
            await self.client.hdel(key, *lapsed)
        return _pending(found, moment)


def create(result_backend: str | None, batch_size: int) -> ParkedStore:
    """The store beside ``result_backend``; in memory when there is none (then a
    restarted worker forgets what it parked, though the broker still holds it)."""
    if not result_backend:
        return MemoryParkedStore()
    kind, url = normalize_url(result_backend)
    if kind == "postgresql":
        return PostgresParkedStore(url, batch_size)
    if kind == "redis":
        return RedisParkedStore(url, batch_size)
    return MemoryParkedStore()
