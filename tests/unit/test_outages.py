"""Transient database errors, reconnect backoff and outage logging (no servers)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiormq
import asyncpg
import pytest
from redis import exceptions as redis_errors

from asyncworker.backends.batching import BatchWriter
from asyncworker.backends.errors import is_transient
from asyncworker.backoff import BackoffPolicy, Outage
from asyncworker.broker.reconnect import _LibraryNoise


def _pg(sqlstate: str) -> asyncpg.PostgresError:
    """The asyncpg exception class asyncpg raises for ``sqlstate``."""
    cls = asyncpg.PostgresError.get_message_class_for_sqlstate(sqlstate)
    return cls("server says no")


@pytest.mark.parametrize(("exc", "transient"), [
    (_pg("57P01"), True),  # admin shutdown (pg_ctl restart -m fast)
    (_pg("57P02"), True),  # crash shutdown (-m immediate)
    (_pg("57P03"), True),  # cannot connect now
    (_pg("53300"), True),  # too many connections
    (_pg("40001"), True),  # serialization failure
    (_pg("40P01"), True),  # deadlock detected
    (_pg("08006"), True),  # connection failure
    (_pg("25006"), True),  # read-only transaction (standby after failover)
    (_pg("22P02"), False),  # invalid text representation: the value
    (_pg("23502"), False),  # not-null violation
    (_pg("42P01"), False),  # undefined table
    (_pg("28P01"), False),  # bad password
    (_pg("57014"), False),  # query cancelled (statement timeout)
    (asyncpg.exceptions.InternalClientError(
        "cannot perform operation: another operation is in progress"), True),
    (asyncpg.exceptions.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"), True),
    (asyncpg.InterfaceError("connection is closed"), True),
    (asyncpg.exceptions.ClientConfigurationError("bad dsn"), False),
    (ConnectionRefusedError(111, "refused"), True),
    (ConnectionResetError(104, "reset"), True),
    (OSError(113, "no route"), True),
    (TimeoutError(), True),
    (redis_errors.ConnectionError("Connection closed by server."), True),
    (redis_errors.BusyLoadingError("Redis is loading the dataset in memory"), True),
    (redis_errors.TimeoutError("Timeout reading from socket"), True),
    (redis_errors.ReadOnlyError("You can't write against a read only replica."), True),
    (redis_errors.ResponseError("BUSY Redis is busy running a script."), True),
    (redis_errors.ResponseError("LOADING Redis is loading the dataset in memory"), True),
    (redis_errors.ResponseError("WRONGTYPE Operation against a key"), False),
    (redis_errors.ResponseError("BUSYGROUP Consumer Group name already exists"), False),
    (ValueError("bad value"), False),
    (TypeError("bad type"), False),
])
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_backoff_is_bounded_jittered_and_increasing() -> None:
    policy = BackoffPolicy(initial=0.1, maximum=10.0)
    import random
    rng = random.Random(7).random
    delays = [policy.delay(n, rng) for n in range(30)]
    ceilings = [min(10.0, 0.1 * 2 ** n) for n in range(30)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert delays[0] <= 0.1
    # Never shorter than the last one until the cap, then within [max/2, max].
    uncapped = [d for d, c in zip(delays, ceilings, strict=True) if c < 10.0]
    assert uncapped == sorted(uncapped)
    assert all(5.0 <= d <= 10.0 for d in delays[10:])
    # Jittered: two workers with different draws do not retry in step.
    assert policy.delay(3, lambda: 0.0) != policy.delay(3, lambda: 1.0)
    assert max(delays) <= 10.0


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Log:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.records.append(("warning", event, kw))

    def error(self, event: str, **kw: Any) -> None:
        self.records.append(("error", event, kw))


def test_outage_logs_one_warning_per_attempt_and_one_error_past_threshold() -> None:
    clock, logger = _Clock(), _Log()
    outage = Outage("broker", "amqp://u:***@h//", BackoffPolicy(error_after=30.0),
                    logger, clock=clock, rng=lambda: 0.5)
    exc = ConnectionRefusedError(111, "refused amqp://u:secret@h//")
    for _ in range(8):  # 8 attempts over 35 s
        wait = outage.failed(exc)
        assert wait > 0
        clock.now += 5.0
    warnings = [r for r in logger.records if r[0] == "warning"]
    errors = [r for r in logger.records if r[0] == "error"]
    assert len(warnings) == 8
    assert all("exc_info" not in kw for _, _, kw in warnings)  # no traceback
    assert all("secret" not in kw["error"] for _, _, kw in warnings)  # redacted
    assert [kw["attempt"] for _, _, kw in warnings] == list(range(1, 9))
    # Attempt 7 is the first at >= 30 s: exactly one ERROR, with the traceback.
    assert len(errors) == 1 and errors[0][2]["exc_info"] is exc
    assert errors[0][2]["attempts"] == 7
    assert outage.down and outage.failures == 8
    assert outage.recovered() is True
    assert not outage.down and outage.recoveries == 1
    assert outage.recovered() is False
    # A new outage starts counting again and may escalate again.
    logger.records.clear()
    outage.failed(exc)
    assert logger.records[0][2]["attempt"] == 1 and outage.failures == 9


def test_batch_writer_retries_transient_errors_and_fails_permanent_ones() -> None:
    async def run() -> None:
        calls: list[list[Any]] = []
        failures = [asyncpg.exceptions.InternalClientError(
            "cannot perform operation: another operation is in progress"), _pg("57P01")]

        async def write_many(rows: Any) -> None:
            calls.append(list(rows))
            if failures:
                raise failures.pop(0)
            if "bad" in rows:
                raise _pg("22P02")

        writer = BatchWriter(write_many, 10, "test", BackoffPolicy(initial=0.001))
        writer.start()
        await writer.submit("row")  # two transient failures, then written
        assert writer.reconnects == 1 and writer.failures == 2 and not writer.failing
        with pytest.raises(asyncpg.exceptions.InvalidTextRepresentationError):
            await writer.submit("bad")
        await writer.close()
        assert calls[:3] == [["row"]] * 3

    asyncio.run(run())


def _record(msg: str, args: Any = (), exc: BaseException | None = None) -> logging.LogRecord:
    return logging.LogRecord("aiormq.connection", logging.ERROR, __file__, 1, msg, args,
                             (type(exc), exc, None) if exc is not None else None)


def test_library_reconnect_noise_is_dropped_and_other_lines_kept() -> None:
    noise = _LibraryNoise()
    assert not noise.filter(_record("error when creating transport: %r", (OSError(),)))
    assert not noise.filter(_record('Connection attempt to "%s" failed: %s. Reconnecting '
                                    "after %r seconds.", ("x", "y", 1)))
    assert not noise.filter(_record("Cancelling cause reader exited abnormally",
                                    exc=aiormq.exceptions.ConnectionClosed(320, "shutdown")))
    # A frame the client could not decode still shows, with its traceback.
    assert noise.filter(_record("Cancelling cause reader exited abnormally",
                                exc=UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")))
    assert noise.filter(_record("Connection %r was blocked by: %r", ("c", "memory")))
