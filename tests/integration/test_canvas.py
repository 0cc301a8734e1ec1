"""Canvas primitives published by a real Celery client, on both result backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import chain, chord, group
from celery.exceptions import ChordError

from tests.conftest import BROKER_URL, PG_DSN, REDIS_URL, result_of, wait_for

pytestmark = pytest.mark.integration

BACKENDS = {
    "postgresql": ("db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1], "db+" + PG_DSN),
    "redis": (REDIS_URL, REDIS_URL),
}


@pytest.fixture(params=sorted(BACKENDS))
def client(request: Any, start_worker: Any, queue_name: str) -> Iterator[Any]:
    """A Celery client routing compat.* and celery.* to a worker on this backend."""
    from celery import Celery

    client_url, worker_url = BACKENDS[request.param]
    # Producers and workers of one deployment share their routes.
    routes = {"compat.*": {"queue": queue_name}, "celery.*": {"queue": queue_name}}
    app = Celery("canvas", broker=BROKER_URL, backend=client_url)
    app.conf.update(result_extended=True, task_routes=routes)
    start_worker("-Q", queue_name, "-c", "20", result_backend=worker_url, task_routes=routes)
    yield app
    app.close()


def s(app: Any, name: str, *args: Any, **options: Any) -> Any:
    return app.signature(f"compat.{name}", args=args, **options)


def test_chain(client: Any) -> None:
    result = chain(s(client, "add_async", 1, 2), s(client, "add_async", 3),
                   s(client, "mul", 10)).apply_async()
    assert result_of(result, 30) == 60
    assert result_of(result.parent, 5) == 6


def test_group(client: Any) -> None:
    result = group(s(client, "add_async", i, i) for i in range(10)).apply_async()
    assert result_of(result, 30) == [2 * i for i in range(10)]


def test_chord(client: Any) -> None:
    result = chord([s(client, "add_async", i, i) for i in range(6)])(s(client, "tsum"))
    assert result_of(result, 30) == 30


def test_chord_with_failing_member(client: Any, redis_client: Any) -> None:
    key = f"errbacks:{uuid.uuid4()}"
    body = s(client, "tsum").on_error(s(client, "errback_old", key))
    result = chord([s(client, "add_async", 1, 1), s(client, "fail", 7)])(body)
    # Through the chord's handle Celery re-raises the failed member first...
    with pytest.raises(ValueError, match=r"failed with \[7\]"):
        result_of(result, 30)
    # ...and the body itself holds the ChordError.
    with pytest.raises(ChordError) as info:
        result_of(client.AsyncResult(result.id), 30)
    assert "Dependency" in str(info.value) and "failed with [7]" in str(info.value)
    wait_for(lambda: redis_client.lrange(key, 0, -1), 15, what="body errback")
    assert redis_client.lrange(key, 0, -1) == [f"old:{result.id}".encode()]


def test_link_and_link_error(client: Any, redis_client: Any) -> None:
    key = f"errbacks:{uuid.uuid4()}"
    ok = s(client, "add_async", 2, 3).apply_async(link=s(client, "mul", 4))
    assert result_of(ok, 30) == 5
    child = wait_for(lambda: ok.children, 15, what="callback child")
    assert result_of(child[0], 30) == 20

    failing = s(client, "fail", 1).apply_async(
        link_error=[s(client, "errback_old", key),
                    client.signature("compat.errback_new", kwargs={"key": key})])
    with pytest.raises(ValueError, match=r"failed with \[1\]"):
        result_of(failing, 30)
    wait_for(lambda: len(redis_client.lrange(key, 0, -1)) == 2, 15, what="both errbacks")
    assert sorted(redis_client.lrange(key, 0, -1)) == sorted(
        [f"old:{failing.id}".encode(), f"new:{failing.id}:ValueError".encode()])


def test_chain_failure_reaches_every_later_step(client: Any) -> None:
    result = chain(s(client, "add_async", 1, 1), s(client, "fail"),
                   s(client, "add_async", 1), s(client, "mul", 2)).apply_async()
    with pytest.raises(ValueError, match=r"failed with \[2\]"):
        result_of(result, 30)
    # The step before the last was never run; it holds the same failure.
    with pytest.raises(ValueError):
        result_of(result.parent, 5)


def test_group_and_chord_inside_chains(client: Any) -> None:
    with_group = chain(s(client, "add_async", 1, 1),
                       group(s(client, "add_async", 1), s(client, "add_async", 2)),
                       s(client, "tsum")).apply_async()
    assert result_of(with_group, 30) == 7
    with_chord = chain(s(client, "add_async", 1, 1),
                       chord([s(client, "add_async", 1), s(client, "add_async", 2)],
                             s(client, "tsum")),
                       s(client, "add_async", 100)).apply_async()
    assert result_of(with_chord, 30) == 107


def test_builtins_starmap_map_chunks(client: Any) -> None:
    from celery.canvas import chunks, xmap, xstarmap

    starmapped = xstarmap(s(client, "add_async"), [(1, 2), (3, 4)], app=client)
    assert result_of(starmapped.apply_async(), 30) == [3, 7]
    mapped = xmap(s(client, "tsum"), [[1, 2], [3, 4, 5]], app=client)
    assert result_of(mapped.apply_async(), 30) == [3, 12]
    pairs = list(zip(range(6), range(6), strict=True))
    chunked = chunks(s(client, "add_async"), pairs, 2, app=client)
    assert result_of(chunked.apply_async(), 30) == [[0, 2], [4, 6], [8, 10]]


def test_group_result_save_and_restore(client: Any) -> None:
    """GroupResult save/restore in celery_tasksetmeta (tables asyncworker created) / Redis."""
    from celery.result import GroupResult

    result = group(s(client, "add_async", i, 1) for i in range(4)).apply_async()
    result.save()
    restored = GroupResult.restore(result.id, app=client)
    assert restored is not None and [r.id for r in restored.results] == [
        r.id for r in result.results]
    assert result_of(restored, 30) == [1, 2, 3, 4]


def test_builtin_tasks_sent_by_name(client: Any) -> None:
    group_id, ids = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(2)]
    tasks = [dict(s(client, "add_async", i, 10, task_id=tid)) for i, tid in enumerate(ids)]
    client.send_task("celery.group", [tasks], {"group_id": group_id})
    assert [result_of(client.AsyncResult(tid)) for tid in ids] == [10, 11]

    body_id = str(uuid.uuid4())
    header = [dict(s(client, "add_async", 1, 1)), dict(s(client, "add_async", 2, 2))]
    body = dict(s(client, "tsum", task_id=body_id))
    client.send_task("celery.chord", [header, body])
    assert result_of(client.AsyncResult(body_id)) == 6

    assert result_of(client.send_task("celery.accumulate", [1, 2, 3], {"index": 1})) == 2
    assert result_of(client.send_task("celery.accumulate", [1, 2])) == [1, 2]


def test_chain_continues_after_a_retried_step(client: Any) -> None:
    """A retry keeps the embedded chain: the next step runs after the retried one."""
    result = chain(s(client, "retry_then_succeed", 1), s(client, "echo")).apply_async()
    assert result_of(result, 30) == {"args": [{"retries": 1, "trace": None}], "kwargs": {}}
