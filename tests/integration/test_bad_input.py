"""Bad messages are logged with their reason and task id, dead-lettered, and the worker goes on."""

from __future__ import annotations

import json
import pickle
import uuid
from typing import Any

import pytest
from celery.exceptions import NotRegistered

from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def _v2_headers(task_id: str, name: str = "compat.add_async", **extra: Any) -> dict[str, Any]:
    headers = {"lang": "py", "task": name, "id": task_id, "root_id": task_id, "parent_id": None,
               "group": None, "retries": 0, "eta": None, "expires": None,
               "timelimit": [None, None], "argsrepr": "", "kwargsrepr": "", "origin": "test"}
    headers.update(extra)
    return headers


def _body(args: list[Any]) -> bytes:
    return json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None,
                                  "chord": None}]).encode()


BAD_CASES: dict[str, Any] = {
    "disallowed content type": lambda tid: dict(
        body=b"task: x", headers=_v2_headers(tid), content_type="application/x-yaml",
        reason="ContentDisallowed"),
    "pickle when only json is accepted": lambda tid: dict(
        body=pickle.dumps([[1, 2], {}, {}]), headers=_v2_headers(tid),
        content_type="application/x-python-serialize", reason="ContentDisallowed"),
    "undecodable json body": lambda tid: dict(
        body=b"[[1, 2], {]", headers=_v2_headers(tid), content_type="application/json",
        reason="undecodable body"),
    "missing id header": lambda tid: dict(
        body=_body([1, 2]), headers={k: v for k, v in _v2_headers(tid).items() if k != "id"},
        content_type="application/json", reason="missing 'id'", logged_id=tid),
    "body of the wrong shape": lambda tid: dict(
        body=b'{"args": [1, 2]}', headers=_v2_headers(tid), content_type="application/json",
        reason="body must be"),
    "unparsable eta": lambda tid: dict(
        body=_body([1, 2]), headers=_v2_headers(tid, eta="next tuesday"),
        content_type="application/json", reason="invalid eta"),
    "invalid timelimit": lambda tid: dict(
        body=_body([1, 2]), headers=_v2_headers(tid, timelimit="soon"),
        content_type="application/json", reason="invalid timelimit"),
    "unknown task": lambda tid: dict(
        body=_body([1, 2]), headers=_v2_headers(tid, name="no.such.task"),
        content_type="application/json", reason="unknown task"),
}


@pytest.fixture
def dlx_worker(celery_app: Any, start_worker: Any, queue_name: str) -> tuple[Any, Any, str]:
    """A worker on a queue that dead-letters to ``<queue>.dlq``; the client's Queue matches."""
    from kombu import Exchange, Queue

    dlq = f"{queue_name}.dlq"
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
    with celery_app.connection_for_write() as conn:
        Queue(dlq, Exchange(""), routing_key=dlq)(conn.default_channel).declare()
    worker = start_worker("-Q", queue_name, "-c", "4", task_queues={
        queue_name: {"exchange": queue_name, "routing_key": queue_name,
                     "queue_arguments": arguments}})
    queue = Queue(queue_name, Exchange(queue_name), routing_key=queue_name,
                  queue_arguments=arguments)
    return worker, queue, dlq


def _publish_raw(celery_app: Any, queue_name: str, body: bytes, headers: dict[str, Any],
                 content_type: str, **properties: Any) -> None:
    with celery_app.connection_for_write() as conn:
        conn.Producer().publish(body, exchange=queue_name, routing_key=queue_name,
                                headers=headers, content_type=content_type,
                                content_encoding="utf-8", **properties)


def _get_dead_letter(celery_app: Any, dlq: str) -> Any:
    from kombu import Exchange, Queue

    with celery_app.connection_for_write() as conn:
        return Queue(dlq, Exchange(""), routing_key=dlq)(conn.default_channel).get(no_ack=True)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_message_is_dead_lettered_and_next_task_runs(
        case: str, celery_app: Any, dlx_worker: tuple[Any, Any, str]) -> None:
    worker, queue, dlq = dlx_worker
    queue_name = queue.name
    task_id = str(uuid.uuid4())
    spec = BAD_CASES[case](task_id)
    _publish_raw(celery_app, queue_name, spec["body"], spec["headers"], spec["content_type"],
                 correlation_id=task_id)
    # The worker keeps going: a valid task right behind it succeeds.
    assert celery_app.send_task("compat.add_async", [5, 5], queue=queue).get(timeout=30) == 10

    dead = wait_for(lambda: _get_dead_letter(celery_app, dlq), 10, what="dead letter")
    body = dead.body if isinstance(dead.body, bytes) else dead.body.encode()
    assert body == spec["body"]  # dead-lettered untouched
    assert dead.headers["x-death"][0]["reason"] == "rejected"

    def logged() -> list[dict[str, Any]]:
        return [line for line in worker.events("message rejected")
                if line.get("task_id") == task_id]
    lines = wait_for(logged, 10, what="rejection log line")
    assert spec["reason"] in lines[0]["reason"]
    assert worker.proc.poll() is None


def test_unknown_task_stores_not_registered(celery_app: Any,
                                            dlx_worker: tuple[Any, Any, str]) -> None:
    _, queue, _ = dlx_worker
    result = celery_app.send_task("no.such.task", [1], queue=queue)
    with pytest.raises(NotRegistered) as info:
        result.get(timeout=30)
    assert info.value.args == ("no.such.task",)


def test_protocol_v1_and_compressed_messages_are_accepted(
        celery_app: Any, dlx_worker: tuple[Any, Any, str]) -> None:
    _, queue, _ = dlx_worker
    queue_name = queue.name
    v1_id = str(uuid.uuid4())
    body = json.dumps({"task": "compat.add_async", "id": v1_id, "args": [40, 2], "kwargs": {},
                       "retries": 0, "eta": None, "expires": None, "utc": True}).encode()
    _publish_raw(celery_app, queue_name, body, {}, "application/json", correlation_id=v1_id)
    assert celery_app.AsyncResult(v1_id).get(timeout=30) == 42

    compressed = celery_app.send_task("compat.add_async", [1, 2], queue=queue,
                                      compression="zlib")
    assert compressed.get(timeout=30) == 3
