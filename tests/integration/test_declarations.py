"""asyncworker and Celery declare the same queues identically: no 406, either order."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _kombu_queue(name: str, options: dict[str, Any]) -> Any:
    from kombu import Exchange, Queue

    return Queue(name, Exchange(options["exchange"], type=options.get("exchange_type", "direct")),
                 routing_key=options["routing_key"],
                 queue_arguments=options.get("queue_arguments"))


def _declare_with_celery(celery_app: Any, queues: list[Any]) -> None:
    with celery_app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in queues:
            queue(channel).declare()


def _delete(celery_app: Any, queues: list[str], exchanges: list[str]) -> None:
    with celery_app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in queues:
            channel.queue_delete(name)
        for name in exchanges:
            channel.exchange_delete(name)


def _options(queue_name: str) -> dict[str, Any]:
    return {"exchange": f"{queue_name}.ex", "exchange_type": "direct",
            "routing_key": f"{queue_name}.rk", "queue_arguments": {"x-max-priority": 10}}


def test_celery_first_then_asyncworker(celery_app: Any, start_worker: Any,
                                       queue_name: str) -> None:
    options = _options(queue_name)
    queue = _kombu_queue(queue_name, options)
    _declare_with_celery(celery_app, [queue])
    start_worker("-Q", queue_name, task_queues={queue_name: options})
    result = celery_app.send_task("compat.add_async", [1, 2], queue=queue, priority=9)
    assert result.get(timeout=30) == 3


def test_asyncworker_first_then_celery(celery_app: Any, start_worker: Any,
                                       queue_name: str) -> None:
    options = _options(queue_name)
    start_worker("-Q", queue_name, task_queues={queue_name: options})
    queue = _kombu_queue(queue_name, options)
    _declare_with_celery(celery_app, [queue])  # would raise 406 on any difference
    result = celery_app.send_task("compat.add_async", [2, 3], queue=queue)
    assert result.get(timeout=30) == 5


@pytest.mark.parametrize("celery_first", [True, False])
def test_missing_queue_with_task_queue_max_priority(celery_app: Any, start_worker: Any,
                                                    queue_name: str, celery_first: bool) -> None:
    """Queues created on demand (-Q / queue=) with task_queue_max_priority on both sides."""
    from celery import Celery

    client = Celery("prio", broker=celery_app.conf.broker_url,
                    backend=celery_app.conf.result_backend)
    client.conf.update(task_queue_max_priority=10, result_extended=True)
    if celery_first:
        _declare_with_celery(client, [client.amqp.queues[queue_name]])
        start_worker("-Q", queue_name, task_queue_max_priority=10)
    else:
        start_worker("-Q", queue_name, task_queue_max_priority=10)
    result = client.send_task("compat.add_async", [4, 4], queue=queue_name)
    assert result.get(timeout=30) == 8


def test_passive_declaration_accepts_any_existing_queue(celery_app: Any, start_worker: Any,
                                                        queue_name: str) -> None:
    from kombu import Exchange, Queue

    queue = Queue(queue_name, Exchange(queue_name), routing_key=queue_name,
                  queue_arguments={"x-max-priority": 5, "x-max-length": 100000})
    _declare_with_celery(celery_app, [queue])
    start_worker("-Q", queue_name, broker_passive_declare="true")
    assert celery_app.send_task("compat.add_async", [1, 1], queue=queue).get(timeout=30) == 2


def _growbin_queues() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((REPO / "config/vision_analysis.toml").read_text())
    return config["task_queues"]


@pytest.mark.parametrize("celery_first", [True, False])
def test_growbin_topology_shared_with_celery(celery_app: Any, start_worker: Any,
                                             celery_first: bool) -> None:
    """The shipped deployment config declares what the Celery deployment declares."""
    from celery import Celery
    from kombu import Exchange, Queue

    growbin = Exchange("growbin", type="direct")
    celery_side = Celery("growbin", broker=celery_app.conf.broker_url,
                         backend=celery_app.conf.result_backend)
    celery_side.conf.update(
        result_extended=True,
        task_queues=(
            Queue("celery", Exchange("celery"), routing_key="celery"),
            Queue("user_input", growbin, routing_key="user.input"),
            Queue("vision_analysis", growbin, routing_key="vision.analyze"),
            Queue("response_generation", growbin, routing_key="response.generate"),
            Queue("high_priority", growbin, routing_key="priority.high",
                  queue_arguments={"x-max-priority": 10}),
        ),
        task_routes={
            "workers.storage.tasks.image_upload_task": {"queue": "user_input"},
            "workers.ai.tasks.gpt5_analysis_task": {"queue": "vision_analysis"},
            "compat.*": {"queue": "high_priority"},
        },
    )
    names = list(_growbin_queues())
    assert names == [q.name for q in celery_side.conf.task_queues]
    _delete(celery_side, names, ["growbin"])
    if celery_first:
        _declare_with_celery(celery_side, list(celery_side.conf.task_queues))
    start_worker(config="config/vision_analysis.toml")
    if not celery_first:
        _declare_with_celery(celery_side, list(celery_side.conf.task_queues))
    result = celery_side.send_task("compat.add_async", [20, 1], priority=5)
    assert result.get(timeout=30) == 21


def test_quorum_queue_declared_by_celery(celery_app: Any, start_worker: Any,
                                         queue_name: str) -> None:
    """Quorum queues refuse global QoS; the worker falls back and still runs ETA tasks."""
    from datetime import UTC, datetime, timedelta

    options = {"exchange": queue_name, "exchange_type": "direct", "routing_key": queue_name,
               "queue_arguments": {"x-queue-type": "quorum"}}
    queue = _kombu_queue(queue_name, options)
    _declare_with_celery(celery_app, [queue])
    worker = start_worker("-Q", queue_name, "-c", "4", task_queues={queue_name: options})
    later = celery_app.send_task("compat.add_async", [1, 2], queue=queue,
                                 eta=datetime.now(UTC) + timedelta(seconds=1))
    now = celery_app.send_task("compat.add_async", [2, 3], queue=queue)
    assert now.get(timeout=30) == 5
    assert later.get(timeout=30) == 3
    assert worker.events(
        "quorum queues consumed: per-consumer QoS, so ETA messages held here count against "
        "the prefetch window")
