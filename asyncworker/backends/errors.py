"""Which result-backend errors are transient: the same call can succeed later.

A transient error means the database was unreachable, restarting, failing
over or briefly overloaded; the write is retried (``BatchWriter``) and the
task's message stays unacked meanwhile. Anything else (a value the database
rejects, a missing table, bad credentials) is permanent and fails the write
as before. ``is_transient`` is the one place that decides, for asyncpg and
redis-py errors alike; ``retry_transient`` applies it to a single call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from redis import exceptions as redis_errors

from ..backoff import Outage

T = TypeVar("T")

# SQLSTATE classes and codes after which a retry can succeed.
TRANSIENT_SQLSTATE_CLASSES = frozenset({
    "08",  # connection exception
    "53",  # insufficient resources (too many connections, out of memory, disk full)
})
TRANSIENT_SQLSTATES = frozenset({
    "57P01",  # admin_shutdown: pg_ctl stop/restart -m fast
    "57P02",  # crash_shutdown: -m immediate, or a backend crashed
    "57P03",  # cannot_connect_now: starting up or shutting down
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "25006",  # read_only_sql_transaction: a standby, mid-failover
})

# asyncpg's client-side errors that say nothing about the statement, only
# that the connection is dead or was left mid-operation by one that died
# ("another operation is in progress", "connection is closed").
_ASYNCPG_CLIENT_PERMANENT = (asyncpg.exceptions.ClientConfigurationError,
                             asyncpg.exceptions.UnsupportedClientFeatureError)

# Redis error replies that a retry outlives: a long script (BUSY), a replica
# loading its data set or promoted a moment ago, a cluster re-sharding.
_REDIS_TRANSIENT_PREFIXES = ("BUSY ", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN",
                             "CLUSTERDOWN", "NOREPLICAS")


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` comes from an unreachable or restarting database, not the data."""
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.PostgresError) and isinstance(sqlstate, str):
        return sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    if isinstance(exc, asyncpg.InterfaceError):
        return not isinstance(exc, _ASYNCPG_CLIENT_PERMANENT)
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return True
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError,
                        redis_errors.ReadOnlyError)):
        return True
    if isinstance(exc, redis_errors.ResponseError):
        return str(exc).startswith(_REDIS_TRANSIENT_PREFIXES)
    return False


async def retry_transient(call: Callable[[], Awaitable[T]], outage: Outage) -> T:
    """``await call()``, again after each transient error (paced by ``outage``)."""
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            await asyncio.sleep(outage.failed(exc))
            continue
        outage.recovered()
        return result
