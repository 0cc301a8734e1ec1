"""Where start markers and worker leases live: PostgreSQL, Redis or memory.

A *marker* says that a late-ack task is running, or was running, on one
worker process: ``owner`` (that process's token and the run's number,
``<token>#<run>``; None once a death has been recorded and nobody runs it),
``deaths`` (how many workers died under it) and ``isolated`` (it was running
as the only suspect of its worker). A *lease* is a worker token refreshed
every few seconds; one not refreshed for ``lease_ttl`` seconds belongs to a
dead worker.

The store sits beside the result backend, in the same database: PostgreSQL
tables ``asyncworker_started`` and ``asyncworker_leases``, or Redis keys
``asyncworker-started-<task id>`` and ``asyncworker-lease-<token>`` (which
expire by themselves). Starting and releasing markers are the only writes on
the hot path; they go through a ``BatchWriter``, so under load one round trip
serves many tasks, and a release is waited for only before a requeue.
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backends import normalize_url
from ..backends.side import PostgresSideStore, SideStore
from ..logging import get_logger, redact_url

log = get_logger("worker_lost")

#: Markers and dead workers' leases older than this are swept away.
HORIZON = 86400.0
START, RELEASE = "start", "release"


@dataclass(slots=True, frozen=True)
class Marker:
    """What is known of one task's runs."""

    owner: str | None
    deaths: int = 0
    isolated: bool = False


def coalesce(ops: Sequence[tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """The last operation per task id, in batch order (a later run wins)."""
    last: dict[str, tuple[Any, ...]] = {}
    for op in ops:
        last.pop(op[1], None)
        last[op[1]] = op
    return last


class LostStore(SideStore):
    """Markers and leases; ``start`` / ``release`` are batched."""

    subject = "worker-lost markers"

    def start(self, task_id: str, owner: str | None, deaths: int, isolated: bool
              ) -> asyncio.Future[None]:
        """Record that ``owner`` runs ``task_id`` now (None: nobody does, after a
        death); the future is done once durable."""
        return self.writer.enqueue((START, task_id, owner, deaths, isolated))

    def release(self, task_id: str, owner: str) -> None:
        """Forget ``owner``'s marker of ``task_id``, with the next batch."""
        self.writer.post((RELEASE, task_id, owner))

    def release_now(self, task_id: str, owner: str) -> asyncio.Future[None]:
        """Forget ``owner``'s marker of ``task_id``; the future is done once durable."""
        return self.writer.enqueue((RELEASE, task_id, owner))

    @abc.abstractmethod
    async def get(self, task_id: str) -> Marker | None:
        """The marker of ``task_id``, if any."""

    @abc.abstractmethod
    async def forget(self, task_id: str) -> None:
        """Drop the marker (the task is settled for good)."""

    @abc.abstractmethod
    async def refresh(self, owner: str, ttl: float) -> None:
        """Refresh ``owner``'s lease."""

    @abc.abstractmethod
    async def lease(self, owner: str, ttl: float) -> float | None:
        """The time of ``owner``'s last refresh, or None when it lapsed."""

    @abc.abstractmethod
    async def drop_lease(self, owner: str) -> None:
        """Remove ``owner``'s lease (a clean stop)."""

    async def sweep(self) -> None:
        """Delete old markers and dead workers' leases."""


class MemoryLostStore(LostStore):
    """In one process (tests)."""

    def __init__(self) -> None:
        super().__init__(100, "memory")
        self.markers: dict[str, Marker] = {}
        self.leases: dict[str, float] = {}

    async def _setup(self) -> None:
        return None

    async def _close(self) -> None:
        return None

    async def _write_many(self, ops: Sequence[tuple[Any, ...]]) -> None:
        for op in coalesce(ops).values():
            if op[0] == START:
                _, task_id, owner, deaths, isolated = op
                self.markers[task_id] = Marker(owner, deaths, isolated)
            elif (found := self.markers.get(op[1])) is not None and found.owner == op[2]:
                del self.markers[op[1]]

    async def get(self, task_id: str) -> Marker | None:
        return self.markers.get(task_id)

    async def forget(self, task_id: str) -> None:
        self.markers.pop(task_id, None)

    async def refresh(self, owner: str, ttl: float) -> None:
        self.leases[owner] = time.time()

    async def lease(self, owner: str, ttl: float) -> float | None:
        beat = self.leases.get(owner)
        return beat if beat is not None and time.time() - beat <= ttl else None

    async def drop_lease(self, owner: str) -> None:
        self.leases.pop(owner, None)


# $1, $2: released (task id, owner) pairs; $3..$6: started task ids, owners,
# deaths, isolated. A batch names each task id once (``coalesce``).
_WRITE_SQL = """
WITH released AS (
  DELETE FROM asyncworker_started s
  USING unnest($1::varchar[], $2::varchar[]) AS r(task_id, owner)
  WHERE s.task_id = r.task_id AND s.owner = r.owner)
INSERT INTO asyncworker_started AS s (task_id, owner, deaths, isolated, started_at)
SELECT task_id, owner, deaths, isolated, extract(epoch FROM clock_timestamp())
FROM unnest($3::varchar[], $4::varchar[], $5::int[], $6::bool[])
  AS x(task_id, owner, deaths, isolated)
ON CONFLICT (task_id) DO UPDATE SET owner = EXCLUDED.owner, deaths = EXCLUDED.deaths,
  isolated = EXCLUDED.isolated, started_at = EXCLUDED.started_at
"""


_TABLES = ("""CREATE TABLE IF NOT EXISTS asyncworker_started (
    task_id VARCHAR(155) PRIMARY KEY,
    owner VARCHAR(255),
    deaths INTEGER NOT NULL DEFAULT 0,
    isolated BOOLEAN NOT NULL DEFAULT FALSE,
    started_at DOUBLE PRECISION NOT NULL)""", """CREATE TABLE IF NOT EXISTS asyncworker_leases (
    owner VARCHAR(255) PRIMARY KEY,
    beat DOUBLE PRECISION NOT NULL)""")


class PostgresLostStore(PostgresSideStore, LostStore):
    """Two small tables next to ``celery_taskmeta``; times by the server's clock."""

    tables = _TABLES

    async def _write_many(self, ops: Sequence[tuple[Any, ...]]) -> None:
        last = coalesce(ops).values()
        starts = [op[1:] for op in last if op[0] == START]
        releases = [op[1:] for op in last if op[0] == RELEASE]
        # One statement per batch: array parameters, not a statement per row.
        await self._pool.execute(
            _WRITE_SQL, [r[0] for r in releases], [r[1] for r in releases],
            [x[0] for x in starts], [x[1] for x in starts], [x[2] for x in starts],
            [x[3] for x in starts])

    async def get(self, task_id: str) -> Marker | None:
        row = await self._pool.fetchrow(
            "SELECT owner, deaths, isolated FROM asyncworker_started WHERE task_id = $1",
            task_id)
        return None if row is None else Marker(row["owner"], row["deaths"], row["isolated"])

    async def forget(self, task_id: str) -> None:
        await self._pool.execute("DELETE FROM asyncworker_started WHERE task_id = $1", task_id)

    async def refresh(self, owner: str, ttl: float) -> None:
        await self._pool.execute(
            "INSERT INTO asyncworker_leases (owner, beat) "
            "VALUES ($1, extract(epoch FROM clock_timestamp())) "
            "ON CONFLICT (owner) DO UPDATE SET beat = EXCLUDED.beat", owner)

    async def lease(self, owner: str, ttl: float) -> float | None:
        row = await self._pool.fetchrow(
            "SELECT beat, extract(epoch FROM clock_timestamp()) - beat AS age "
            "FROM asyncworker_leases WHERE owner = $1", owner)
        if row is None or float(row["age"]) > ttl:
            return None
        return float(row["beat"])

    async def drop_lease(self, owner: str) -> None:
        await self._pool.execute("DELETE FROM asyncworker_leases WHERE owner = $1", owner)

    async def sweep(self) -> None:
        for table, column in (("asyncworker_started", "started_at"),
                              ("asyncworker_leases", "beat")):
            await self._pool.execute(
                f"DELETE FROM {table} WHERE {column} < "
                "extract(epoch FROM clock_timestamp()) - $1", HORIZON)


# KEYS[1] marker key; ARGV[1] owner: delete the marker only if that owner holds it.
_RELEASE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, marker = pcall(cjson.decode, current)
  if ok and marker['owner'] == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
end
return 0
"""


class RedisLostStore(LostStore):
    """Keys that expire by themselves: markers after ``HORIZON``, leases after their ttl."""

    MARKER = "asyncworker-started-"
    LEASE = "asyncworker-lease-"

    def __init__(self, url: str, batch_size: int) -> None:
        import redis.asyncio as aioredis

        super().__init__(batch_size, redact_url(url))
        self.client: Any = aioredis.from_url(url)
        self._release = self.client.register_script(_RELEASE_LUA)

    async def _setup(self) -> None:
        return None

    async def _close(self) -> None:
        await self.client.aclose()

    def _encode(self, marker: Marker) -> str:
        return json.dumps({"owner": marker.owner, "deaths": marker.deaths,
                           "isolated": marker.isolated})

    async def _write_many(self, ops: Sequence[tuple[Any, ...]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for op in coalesce(ops).values():
                key = self.MARKER + op[1]
                if op[0] == START:
                    pipe.set(key, self._encode(Marker(op[2], op[3], op[4])), ex=int(HORIZON))
                else:
                    await self._release(keys=[key], args=[op[2]], client=pipe)
            await pipe.execute()

    async def get(self, task_id: str) -> Marker | None:
        raw = await self.client.get(self.MARKER + task_id)
        if raw is None:
            return None
        data = json.loads(raw)
        return Marker(data.get("owner"), int(data.get("deaths", 0)),
                      bool(data.get("isolated", False)))

    async def forget(self, task_id: str) -> None:
        await self.client.delete(self.MARKER + task_id)

    async def refresh(self, owner: str, ttl: float) -> None:
        await self.client.set(self.LEASE + owner, repr(time.time()), px=int(ttl * 1000))

    async def lease(self, owner: str, ttl: float) -> float | None:
        raw = await self.client.get(self.LEASE + owner)
        return None if raw is None else float(raw)

    async def drop_lease(self, owner: str) -> None:
        await self.client.delete(self.LEASE + owner)


def create(result_backend: str | None, batch_size: int) -> LostStore | None:
    """The store beside ``result_backend`` (None: no backend, no detection)."""
    if not result_backend:
        return None
    kind, url = normalize_url(result_backend)
    if kind == "postgresql":
        return PostgresLostStore(url, batch_size)
    if kind == "redis":
        return RedisLostStore(url, batch_size)
    return MemoryLostStore()
