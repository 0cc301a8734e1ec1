"""Declarations and routes derived from settings, the way Celery derives them."""

from __future__ import annotations

from asyncworker.broker.amqp import amqp_url
from asyncworker.broker.topology import Topology
from asyncworker.settings import Settings


def test_default_queue_is_celery_direct() -> None:
    topo = Topology(Settings())
    [queue] = topo.consume_from(None)
    assert (queue.name, queue.exchange.name, queue.exchange.type, queue.routing_key) == (
        "celery", "celery", "direct", "celery")
    assert queue.durable and not queue.auto_delete and queue.arguments == {}


def test_missing_queue_and_max_priority() -> None:
    topo = Topology(Settings(task_queue_max_priority=10))
    queue = topo.queue("extra")
    assert (queue.exchange.name, queue.routing_key) == ("extra", "extra")
    assert queue.arguments == {"x-max-priority": 10}


def test_quorum_default_queue() -> None:
    [queue] = Topology(Settings(task_default_queue_type="quorum")).consume_from(None)
    assert queue.arguments == {"x-queue-type": "quorum"}


def test_routes_globs_and_explicit_queue() -> None:
    settings = Settings(
        task_queues={"vision": {"exchange": "growbin", "routing_key": "vision.analyze"},
                     "events": {"exchange": "fanout_x", "exchange_type": "topic",
                                "routing_key": "ev.#"}},
        task_routes={"workers.ai.*": {"queue": "vision"}, "re:^x\\.": "celery",
                     "ev.*": {"queue": "events"}},
    )
    topo = Topology(settings)
    # Celery publishes to a queue behind a direct exchange through the default
    # exchange, keyed by the queue name (seen with a real Celery 5.7 client).
    route = topo.route("workers.ai.tasks.gpt5_analysis_task")
    assert (route.exchange, route.routing_key) == ("", "vision")
    assert (topo.route("x.y").exchange, topo.route("x.y").routing_key) == ("", "celery")
    assert topo.route("any", queue="vision").routing_key == "vision"
    explicit = topo.route("any", queue="vision", exchange="growbin", routing_key="vision.analyze")
    assert (explicit.exchange, explicit.routing_key) == ("growbin", "vision.analyze")
    topic = topo.route("ev.x")
    assert (topic.exchange, topic.routing_key) == ("fanout_x", "ev.#")
    assert topo.route("any", exchange="", routing_key="q") == topo.route(
        "any", exchange="", routing_key="q")


def test_amqp_url_forms() -> None:
    assert amqp_url("amqp://u:p@h:5672//", 30) == "amqp://u:p@h:5672/?heartbeat=30"
    assert amqp_url("pyamqp://h/vhost") == "amqp://h/vhost"
