"""PostgreSQL result backend on asyncpg, writing Celery's ``celery_taskmeta``.

Rows are what Celery's database backend (5.7) writes: ``result`` holds the
``result_serializer`` encoding of the raw value (JSON by default; exceptions as
``{exc_type, exc_message, exc_module}``), ``date_done`` naive UTC for ready
states, ``traceback`` text, and with ``result_extended`` the name, args,
kwargs, worker, retries and queue. A stored SUCCESS is never overwritten.

Writes go through ``BatchWriter``: one ``executemany`` per batch of whatever
has queued, each caller waiting for its own row's commit. A transient error
(``errors.is_transient``) retries the batch until the server is back; the
upsert never replaces a SUCCESS and writes the same values again otherwise,
so a batch committed just before the connection died is harmless to repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from .. import serialization
from ..backoff import BackoffPolicy, Outage
from ..logging import get_logger, redact_url
from ..settings import Settings
from .base import ResultBackend, ResultCodec, StoredResult, TaskOutcome
from .batching import BatchWriter, Linger
from .errors import is_transient, retry_transient

log = get_logger("backend.postgres")


class _PoolNoise(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reopen its minimum
    connections; while the server is unreachable the writer's ``Outage`` already
    logs each attempt, so drop those (other pool messages pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (str(record.msg).startswith("Failed to restore the pool connection floor")
                    and exc is not None and is_transient(exc))


_POOL_NOISE = _PoolNoise()

EXTENDED_COLUMNS = (
    ("name", "VARCHAR(155)"),
    ("args", "BYTEA"),
    ("kwargs", "BYTEA"),
    ("worker", "VARCHAR(155)"),
    ("retries", "INTEGER"),
    ("queue", "VARCHAR(155)"),
    ("stamps", "BYTEA"),
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(schema: str | None, name: str) -> str:
    return f"{_quote(schema)}.{_quote(name)}" if schema else _quote(name)


def utcnow_naive() -> datetime:
    """Now in UTC without tzinfo, as Celery stores ``date_done``."""
    return datetime.now(UTC).replace(tzinfo=None)


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without a reset query.

    The pool runs ``RESET ALL; UNLISTEN *; CLOSE ALL; ...`` on every release
    (measured: ~2% of the worker's CPU under load, one round trip per batch).
    This backend sets no session state, holds no session locks and listens
    to nothing, so there is nothing to reset; an open transaction is still
    rolled back by the pool.
    """

    def get_reset_query(self) -> str:
        return ""


class PostgresBackend(ResultBackend):
    """Celery-compatible ``celery_taskmeta`` writer with batched, durable writes."""

    def __init__(self, dsn: str, settings: Settings) -> None:
        self.dsn = dsn
        self.settings = settings
        self.codec = ResultCodec(settings.result_serializer)
        names, schemas = settings.database_table_names, settings.database_table_schemas
        self.task_table = _qualified(schemas.get("task"), names.get("task", "celery_taskmeta"))
        self.group_table = _qualified(
            schemas.get("group"), names.get("group", "celery_tasksetmeta")
        )
        self.task_sequence = _qualified(schemas.get("task"), "task_id_sequence")
        self.group_sequence = _qualified(schemas.get("group"), "taskset_id_sequence")
        self.extended = settings.result_extended
        self._pool: asyncpg.Pool | None = None
        self.policy = BackoffPolicy.from_settings(settings)
        self._writer = BatchWriter(self._write_many, settings.result_batch_size,
                                   self.describe(), self.policy,
                                   linger=Linger.from_settings(settings))
        columns = ["task_id", "status", "result", "date_done", "traceback", "children"]
        if self.extended:
            columns += ["name", "args", "kwargs", "worker", "retries", "queue"]
        placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
        self._insert_sql = (
            f"INSERT INTO {self.task_table} (id, {', '.join(columns)}) "
            f"VALUES (nextval('{self.task_sequence}'), {placeholders}) "
            f"ON CONFLICT (task_id) DO UPDATE SET {updates} "
            f"WHERE {self.task_table}.status IS DISTINCT FROM 'SUCCESS'"
        )

    def describe(self) -> str:
        """The server URL with its password hidden."""
        return redact_url(self.dsn)

    # -- lifecycle ---------------------------------------------------------
    async def setup(self) -> None:
        """Connect (retrying while the server is down) and create tables when absent."""
        pool_log = logging.getLogger("asyncpg.pool")
        if _POOL_NOISE not in pool_log.filters:
            pool_log.addFilter(_POOL_NOISE)
        outage = Outage("result backend", self.describe(), self.policy, log)
        self._pool = await retry_transient(self._connect, outage)
        if self.settings.database_create_tables_at_setup:
            await retry_transient(self._create_tables, outage)
        self._writer.start()

    async def _connect(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=max(2, self.settings.result_backend_pool_size),
            command_timeout=60,
            connection_class=_Connection,
            # Named so operators (and tests) can tell our sessions apart.
            server_settings={
                "application_name": f"asyncworker {self.settings.worker_nodename}"},
        )
        return pool

    def batch_writer(self) -> BatchWriter:
        return self._writer

    async def close(self) -> None:
        """Write what is queued, then close the pool."""
        await self._writer.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _create_tables(self) -> None:
        assert self._pool is not None
        ddl = [
            f"CREATE SEQUENCE IF NOT EXISTS {self.task_sequence}",
            f"CREATE SEQUENCE IF NOT EXISTS {self.group_sequence}",
            f"""CREATE TABLE IF NOT EXISTS {self.task_table} (
                id INTEGER NOT NULL PRIMARY KEY,
                task_id VARCHAR(155) UNIQUE,
                status VARCHAR(50),
                result BYTEA,
                date_done TIMESTAMP WITHOUT TIME ZONE,
                traceback TEXT,
                children BYTEA)""",
            # asyncworker's own: revoked ids survive restarts (Celery keeps them in memory).
            """CREATE TABLE IF NOT EXISTS asyncworker_revoked (
                task_id VARCHAR(155) PRIMARY KEY,
                revoked_at DOUBLE PRECISION NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS {self.group_table} (
                id INTEGER NOT NULL PRIMARY KEY,
                taskset_id VARCHAR(155) UNIQUE,
                result BYTEA,
                date_done TIMESTAMP WITHOUT TIME ZONE)""",
        ]
        # Tables made by Celery before 5.5 lack `children`; clients ignore extra columns.
        ddl.append(f"ALTER TABLE {self.task_table} ADD COLUMN IF NOT EXISTS children BYTEA")
        if self.extended:
            # A Celery client without result_extended may have created the table;
            # the extra columns are invisible to it, so adding them is safe.
            ddl += [
                f"ALTER TABLE {self.task_table} ADD COLUMN IF NOT EXISTS {name} {kind}"
                for name, kind in EXTENDED_COLUMNS
            ]
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialize with other asyncworker processes starting at once.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('asyncworker-ddl'))")
            for statement in ddl:
                await conn.execute(statement)

    # -- writes ------------------------------------------------------------
    def _row(self, outcome: TaskOutcome) -> tuple[Any, ...]:
        row: tuple[Any, ...] = (
            outcome.task_id,
            outcome.state,
            self.codec.encode(outcome.result),
            utcnow_naive() if outcome.ready else None,
            outcome.traceback,
            self.codec.encode(outcome.children) if outcome.children else None,
        )
        if self.extended:
            req = outcome.request
            if req is None:
                row += (None, None, None, None, None, None)
            else:
                row += (
                    req.task,
                    serialization.dumps(req.args),
                    serialization.dumps(req.kwargs),
                    req.hostname,
                    req.retries,
                    req.delivery_info.get("routing_key"),
                )
        return row

    async def store(self, outcome: TaskOutcome) -> None:
        """Queue the row for the next batch and wait until it is committed."""
        # submit's future: a coroutine frame fewer
        await self._writer.enqueue(self._row(outcome), outcome.runtime)

    async def _write_many(self, rows: Sequence[tuple[Any, ...]]) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            try:
                await conn.executemany(self._insert_sql, rows)
            except Exception as exc:
                if is_transient(exc):
                    # A connection left mid-operation by a dead server ("another
                    # operation is in progress") must not go back to the pool.
                    conn.terminate()
                raise

    async def save_revoked(self, task_id: str, when: float) -> None:
        """Upsert one revoked id."""
        assert self._pool is not None
        await self._pool.execute(
            "INSERT INTO asyncworker_revoked (task_id, revoked_at) VALUES ($1, $2) "
            "ON CONFLICT (task_id) DO UPDATE SET revoked_at = EXCLUDED.revoked_at",
            task_id, when)

    async def load_revoked(self, since: float) -> list[tuple[str, float]]:
        """Revoked ids newer than ``since``; older ones are deleted."""
        assert self._pool is not None
        await self._pool.execute("DELETE FROM asyncworker_revoked WHERE revoked_at < $1",
                                 since)
        rows = await self._pool.fetch(
            "SELECT task_id, revoked_at FROM asyncworker_revoked WHERE revoked_at >= $1",
            since)
        return [(r["task_id"], r["revoked_at"]) for r in rows]

    async def cleanup(self) -> int:
        """Delete ready results older than ``result_expires`` (Celery's backend_cleanup)."""
        assert self._pool is not None
        if not self.settings.result_expires:
            return 0
        status = await self._pool.execute(
            f"DELETE FROM {self.task_table} WHERE date_done < "
            "(now() AT TIME ZONE 'utc') - make_interval(secs => $1)",
            float(self.settings.result_expires))
        return int(status.split()[-1])

    # -- reads -------------------------------------------------------------
    async def get(self, task_id: str) -> StoredResult | None:
        """Read one row and decode its result as a Celery client would."""
        assert self._pool is not None
        row = await self._pool.fetchrow(
            f"SELECT status, result, traceback, date_done FROM {self.task_table} "
            "WHERE task_id = $1",
            task_id,
        )
        if row is None:
            return None
        raw = row["result"]
        value = None if raw is None else self.codec.decode(bytes(raw))
        return StoredResult(task_id, row["status"], value, row["traceback"], row["date_done"])


