"""A real Celery client cannot tell asyncworker from a Celery worker."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from tests.apps.compat import CustomError
from tests.conftest import task_rows

pytestmark = pytest.mark.integration

BUILTINS = [ValueError, KeyError, ZeroDivisionError, RuntimeError]


def _rich_values(i: int) -> tuple[list[Any], dict[str, Any]]:
    args = [
        datetime(2026, 1, 2, 3, 4, 5, i, tzinfo=UTC),
        Decimal(f"{i}.0100"),
        uuid.UUID(int=i + 1),
        f"text-{i}".encode(),
    ]
    kwargs = {
        "when": datetime(2025, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=2))),
        "day": date(2026, 2, i % 28 + 1),
        "raw": bytes([0xFF, 0x00, i % 256]),
        "nested": {"n": i, "l": [1, "two", None, True]},
    }
    return args, kwargs


def _plan(i: int) -> tuple[str, list[Any], dict[str, Any], Any]:
    """(task name, args, kwargs, expected value or exception instance) for task i."""
    kind = i % 7
    if kind == 0:
        return "compat.add_async", [i, 2 * i], {}, 3 * i
    if kind == 1:
        return "compat.add_sync", [i, 7], {}, i + 7
    if kind == 2:
        args, kwargs = _rich_values(i)
        return "compat.echo", args, kwargs, {"args": args, "kwargs": kwargs}
    if kind == 3:
        args, kwargs = _rich_values(i)
        return "compat.echo_sync", args, kwargs, {"args": args, "kwargs": kwargs}
    if kind == 4:
        exc_type = BUILTINS[i % len(BUILTINS)]
        return "compat.raise_builtin", [exc_type.__name__, f"boom {i}"], {}, exc_type(f"boom {i}")
    if kind == 5:
        exc_type = BUILTINS[(i + 1) % len(BUILTINS)]
        return ("compat.raise_builtin_sync", [exc_type.__name__, f"sync boom {i}"], {},
                exc_type(f"sync boom {i}"))
    return "compat.raise_custom", [f"custom {i}"], {}, CustomError(f"custom {i}")


def test_500_mixed_tasks_round_trip(celery_app: Any, start_worker: Any, queue_name: str,
                                    pg: Any) -> None:
    worker = start_worker("-Q", queue_name, "-c", "50")
    sent = []
    for i in range(500):
        name, args, kwargs, expected = _plan(i)
        result = celery_app.send_task(name, args, kwargs, queue=queue_name)
        sent.append((result, name, args, kwargs, expected))

    for result, name, _args, _kwargs, expected in sent:
        if isinstance(expected, BaseException):
            with pytest.raises(type(expected)) as info:
                result.get(timeout=60, interval=0.05)
            assert info.value.args == expected.args, name
        else:
            assert result.get(timeout=60, interval=0.05) == expected, name

    rows = task_rows(pg, [r.id for r, *_ in sent])
    assert len(rows) == 500
    for result, name, args, kwargs, expected in sent:
        row = rows[result.id]
        assert row["status"] == ("FAILURE" if isinstance(expected, BaseException) else "SUCCESS")
        assert row["name"] == name
        assert row["worker"].startswith("asyncworker@")
        assert row["queue"] == queue_name
        assert row["retries"] == 0
        assert row["date_done"] is not None and row["date_done"].tzinfo is None
        assert (row["traceback"] is not None) == isinstance(expected, BaseException)
        # args/kwargs hold the client's JSON; decoding them gives the values back.
        from kombu.utils.json import loads

        assert loads(bytes(row["args"])) == args
        assert loads(bytes(row["kwargs"])) == kwargs
        # The client reads the extended fields too.
        assert result.name == name

    # One line per task outcome, with id, name and runtime; no password anywhere.
    logged = {line["task_id"]: line for line in worker.lines()
              if line.get("event") in ("task succeeded", "task failed")}
    assert set(logged) == {r.id for r, *_ in sent}
    assert all(line["task"] and line["runtime"] >= 0 for line in logged.values())
    text = worker.log_path.read_text()
    assert "asyncworker:asyncworker@" not in text and "asyncworker:***@" in text


def test_delay_and_apply_async_through_celery_task_stubs(celery_app: Any, start_worker: Any,
                                                         queue_name: str) -> None:
    """Producers that call .delay()/.apply_async() on their own task objects."""
    from celery import Celery

    start_worker("-Q", queue_name, "-c", "5")
    producer = Celery("stubs", broker=celery_app.conf.broker_url,
                      backend=celery_app.conf.result_backend)
    producer.conf.task_routes = {"compat.*": {"queue": queue_name}}

    @producer.task(name="compat.add_sync")
    def add_sync(x: int, y: int) -> int:  # pragma: no cover - runs in asyncworker
        raise AssertionError("must not run in the client")

    assert add_sync.delay(20, 22).get(timeout=30) == 42
    assert add_sync.apply_async((1, 2), countdown=0.2).get(timeout=30) == 3
    assert add_sync.apply_async(kwargs={"x": 5, "y": 6}, priority=3).get(timeout=30) == 11


def test_bound_request_and_hooks(celery_app: Any, start_worker: Any, queue_name: str,
                                 redis_client: Any) -> None:
    start_worker("-Q", queue_name, "-c", "5", "-n", "compat1@testhost")
    parent = str(uuid.uuid4())
    r = celery_app.send_task("compat.request_info", [1, "a"], {"k": "v"}, queue=queue_name,
                             parent_id=parent, root_id=parent)
    info = r.get(timeout=30)
    assert info["id"] == r.id and info["task"] == "compat.request_info"
    assert info["args"] == [1, "a"] and info["kwargs"] == {"k": "v"}
    assert info["retries"] == 0 and info["root_id"] == parent and info["parent_id"] == parent
    assert info["hostname"] == "compat1@testhost"
    assert info["delivery_info"]["routing_key"] == queue_name
    assert info["delivery_info"]["redelivered"] is False

    rs = celery_app.send_task("compat.request_info_sync", [9], queue=queue_name)
    assert rs.get(timeout=30) == {"id": rs.id, "task": "compat.request_info_sync", "args": [9],
                                  "hostname": "compat1@testhost"}

    ok = celery_app.send_task("compat.hooked", [False], queue=queue_name)
    bad = celery_app.send_task("compat.hooked", [True], queue=queue_name)
    assert ok.get(timeout=30) == "hooked ok"
    with pytest.raises(CustomError):
        bad.get(timeout=30)
    assert redis_client.lrange(f"hooks:{ok.id}", 0, -1) == [b"success:'hooked ok'"]
    assert redis_client.lrange(f"hooks:{bad.id}", 0, -1) == [b"failure:CustomError"]


def test_ignore_result_reject_ignore_and_unencodable(celery_app: Any, start_worker: Any,
                                                     queue_name: str, pg: Any) -> None:
    # One slot: tasks run in delivery order, so the last one finishing means all did.
    worker = start_worker("-Q", queue_name, "-c", "1")
    ignored = celery_app.send_task("compat.ignored", [1], queue=queue_name)
    # The message header overrides the task option (here: do not store).
    header_ignored = celery_app.send_task("compat.add_async", [1, 1], queue=queue_name,
                                          ignore_result=True)
    rejecting = celery_app.send_task("compat.rejecting", queue=queue_name)
    ignoring = celery_app.send_task("compat.ignoring", queue=queue_name)
    unencodable = celery_app.send_task("compat.unencodable", queue=queue_name)
    marker = celery_app.send_task("compat.add_async", [2, 2], queue=queue_name)
    assert marker.get(timeout=30) == 4
    with pytest.raises(Exception) as info:
        unencodable.get(timeout=30)
    assert "cannot encode result" in str(info.value)
    rows = task_rows(pg, [ignored.id, header_ignored.id, rejecting.id, ignoring.id])
    assert rows == {}
    rejected = [line["task_id"] for line in worker.events("message rejected")]
    assert rejected == [rejecting.id]


def test_pickle_results_for_old_readers(celery_app: Any, start_worker: Any, queue_name: str,
                                        pg: Any) -> None:
    """result_serializer=pickle writes raw pickles, which every Celery version reads."""
    import pickle

    worker = start_worker("-Q", queue_name, "-c", "2", result_serializer="pickle")
    ok = celery_app.send_task("compat.echo", [Decimal("1.5")], queue=queue_name)
    bad = celery_app.send_task("compat.raise_custom", ["old"], queue=queue_name)
    assert ok.get(timeout=30) == {"args": [Decimal("1.5")], "kwargs": {}}
    with pytest.raises(CustomError):
        bad.get(timeout=30)
    with pg.cursor() as cur:
        cur.execute("SELECT result FROM celery_taskmeta WHERE task_id = %s", (ok.id,))
        assert pickle.loads(bytes(cur.fetchone()[0])) == {"args": [Decimal("1.5")], "kwargs": {}}
    assert any("results are pickled" in line.get("event", "") for line in worker.lines())


def test_backend_cleanup_deletes_only_expired_rows(celery_app: Any, start_worker: Any,
                                                   queue_name: str, pg: Any) -> None:
    start_worker("-Q", queue_name, "-c", "2", result_expires=3600)
    old_id = f"old-{uuid.uuid4()}"
    with pg.cursor() as cur:
        cur.execute("INSERT INTO celery_taskmeta (id, task_id, status, date_done) VALUES "
                    "(nextval('task_id_sequence'), %s, 'SUCCESS', "
                    "(now() AT TIME ZONE 'utc') - interval '2 hours')", (old_id,))
    fresh = celery_app.send_task("compat.add_async", [1, 1], queue=queue_name)
    assert fresh.get(timeout=30) == 2
    deleted = celery_app.send_task("celery.backend_cleanup", queue=queue_name).get(timeout=30)
    assert deleted >= 1
    rows = task_rows(pg, [old_id, fresh.id])
    assert old_id not in rows and fresh.id in rows
