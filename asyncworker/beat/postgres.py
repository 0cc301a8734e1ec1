"""Tick claims and run-time entries in PostgreSQL (asyncpg).

Three tables, created at start-up when missing:

- ``asyncworker_beat_ticks``: one row per claimed tick, unique on (entry,
  fire time). ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` is the claim:
  only the inserting replica gets its row back. ``sent_at`` is set once the
  broker confirmed the publish.
- ``asyncworker_beat_history``: each entry's anchor and latest claimed tick.
- ``asyncworker_beat_entries``: entries added at run time (``beat entries``).

Times compared across replicas (claim age) use the database's clock, so
replicas' clocks need not agree for take-overs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ..logging import redact_url
from ..settings import Settings
from .entries import Tick
from .store import History, StoredEntry, TickStore

TICKS = "asyncworker_beat_ticks"
HISTORY = "asyncworker_beat_history"
ENTRIES = "asyncworker_beat_entries"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TICKS} (
    entry TEXT NOT NULL,
    fire_time TIMESTAMPTZ NOT NULL,
    claimed_by TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    sent_at TIMESTAMPTZ,
    PRIMARY KEY (entry, fire_time)
);
CREATE INDEX IF NOT EXISTS {TICKS}_unsent ON {TICKS} (claimed_at) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS {HISTORY} (
    entry TEXT PRIMARY KEY,
    anchor TIMESTAMPTZ NOT NULL,
    last_fire TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS {ENTRIES} (
    name TEXT PRIMARY KEY,
    config JSONB NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
"""

# The claim and the history's advance in one statement: a tick is claimed
# durably, and the entry's last fire moves with it, or neither happens.
_CLAIM = f"""
WITH claimed AS (
    INSERT INTO {TICKS} (entry, fire_time, claimed_by)
    SELECT entry, fire_time, $3 FROM unnest($1::text[], $2::timestamptz[]) AS t(entry, fire_time)
    -- One order for every replica: overlapping batches inserted in different
    -- orders would wait on each other's rows and deadlock.
    ORDER BY entry, fire_time
    ON CONFLICT DO NOTHING
    RETURNING entry, fire_time
), latest AS (
    SELECT entry, max(fire_time) AS fire_time FROM claimed GROUP BY entry
), advanced AS (
    UPDATE {HISTORY} h SET last_fire = l.fire_time FROM latest l
    WHERE h.entry = l.entry AND (h.last_fire IS NULL OR h.last_fire < l.fire_time)
)
SELECT entry, fire_time FROM claimed
"""

_TAKE_OVER = f"""
WITH stale AS (
    SELECT entry, fire_time, claimed_by FROM {TICKS}
    WHERE sent_at IS NULL AND claimed_at < clock_timestamp() - make_interval(secs => $2)
    ORDER BY fire_time LIMIT 10000
    FOR UPDATE SKIP LOCKED
)
UPDATE {TICKS} t SET claimed_by = $1, claimed_at = clock_timestamp()
FROM stale s WHERE t.entry = s.entry AND t.fire_time = s.fire_time
RETURNING t.entry, t.fire_time, s.claimed_by
"""


class PostgresStore(TickStore):
    """Claims by unique insert; also keeps the run-time entries table."""

    supports_entries = True

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.create_tables = settings.database_create_tables_at_setup
        self.timeout = settings.broker_connection_timeout
        self._pool: asyncpg.Pool | None = None
        self._tables_ready = False

    def describe(self) -> str:
        return f"postgresql {redact_url(self.url)}"

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresStore.setup() was not called")
        return self._pool

    async def setup(self) -> None:
        if self._pool is None:
            self._pool = await self._connect()
        if self.create_tables and not self._tables_ready:
            async with self.pool.acquire() as conn, conn.transaction():
                # Replicas starting together must not race on CREATE TABLE.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TICKS)
                await conn.execute(_SCHEMA)
            self._tables_ready = True

    async def _connect(self) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self.url, min_size=1, max_size=4, timeout=self.timeout,
            # Named so operators (and tests) can tell the scheduler's sessions apart.
            server_settings={"application_name": "asyncworker beat"})

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def history(self, names: Sequence[str], now: datetime) -> dict[str, History]:
        async with self.pool.acquire() as conn:
            await conn.execute(
                f"INSERT INTO {HISTORY} (entry, anchor) SELECT unnest($1::text[]), $2 "
                "ON CONFLICT DO NOTHING", list(names), now)
            rows = await conn.fetch(
                f"SELECT entry, anchor, last_fire FROM {HISTORY} WHERE entry = ANY($1::text[])",
                list(names))
        return {r["entry"]: History(r["anchor"], r["last_fire"]) for r in rows}

    async def claim(self, ticks: Sequence[Tick], node: str) -> list[Tick]:
        if not ticks:
            return []
        rows = await self.pool.fetch(_CLAIM, [t.entry for t in ticks],
                                     [t.fire_time for t in ticks], node)
        return [Tick(r["entry"], r["fire_time"]) for r in rows]

    async def mark_sent(self, ticks: Sequence[Tick]) -> None:
        if ticks:
            ticks = sorted(ticks, key=_order)
            await self.pool.execute(
                f"UPDATE {TICKS} t SET sent_at = clock_timestamp() "
                "FROM unnest($1::text[], $2::timestamptz[]) AS s(entry, fire_time) "
                "WHERE t.entry = s.entry AND t.fire_time = s.fire_time",
                [t.entry for t in ticks], [t.fire_time for t in ticks])

    async def take_over(self, node: str, timeout: float) -> list[tuple[Tick, str]]:
        rows = await self.pool.fetch(_TAKE_OVER, node, float(timeout))
        return [(Tick(r["entry"], r["fire_time"]), r["claimed_by"]) for r in rows]

    async def advance(self, name: str, upto: datetime) -> None:
        await self.pool.execute(
            f"UPDATE {HISTORY} SET last_fire = $2 WHERE entry = $1 "
            "AND (last_fire IS NULL OR last_fire < $2)", name, upto)

    async def forget(self, name: str) -> None:
        await self.pool.execute(f"DELETE FROM {HISTORY} WHERE entry = $1", name)

    async def prune(self, before: datetime) -> None:
        await self.pool.execute(
            f"DELETE FROM {TICKS} WHERE sent_at IS NOT NULL AND fire_time < $1", before)

    async def entries_version(self) -> Any:
        row = await self.pool.fetchrow(f"SELECT count(*), max(updated_at) FROM {ENTRIES}")
        return tuple(row) if row else None

    async def load_entries(self) -> list[StoredEntry]:
        rows = await self.pool.fetch(f"SELECT name, config, enabled FROM {ENTRIES} ORDER BY name")
        return [StoredEntry(r["name"], json.loads(r["config"]), r["enabled"]) for r in rows]

    async def save_entry(self, name: str, config: Mapping[str, Any], *, replace: bool) -> bool:
        conflict = ("DO UPDATE SET config = EXCLUDED.config, updated_at = clock_timestamp()"
                    if replace else "DO NOTHING")
        status = await self.pool.execute(
            f"INSERT INTO {ENTRIES} (name, config) VALUES ($1, $2::jsonb) "
            f"ON CONFLICT (name) {conflict}", name, json.dumps(dict(config)))
        return bool(status.endswith(" 1"))

    async def remove_entry(self, name: str) -> bool:
        status = await self.pool.execute(f"DELETE FROM {ENTRIES} WHERE name = $1", name)
        return bool(status.endswith(" 1"))

    async def set_enabled(self, name: str, enabled: bool) -> bool:
        status = await self.pool.execute(
            f"UPDATE {ENTRIES} SET enabled = $2, updated_at = clock_timestamp() "
            "WHERE name = $1", name, enabled)
        return bool(status.endswith(" 1"))


def _order(tick: Tick) -> tuple[str, datetime]:
    return tick.entry, tick.fire_time
