"""``MemoryBroker``: AMQP's observable semantics in process (routing, the prefetch window,
settling once, requeue with ``redelivered``, held messages) and its records."""

from __future__ import annotations

import asyncio

import pytest

from asyncworker.broker.base import Delivery
from asyncworker.broker.memory import MemoryBroker
from asyncworker.broker.topology import ExchangeSpec, QueueSpec

from .helpers import declare, encoded, task_ids, until


class _Consumer:
    """Collects deliveries, in order."""

    def __init__(self) -> None:
        self.got: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.got.append(delivery)

    @property
    def ids(self) -> list[str]:
        return task_ids(self.got)


async def _publish(broker: MemoryBroker, *ids: str, queue: str = "celery") -> None:
    for task_id in ids:
        await broker.publish("", queue, encoded("t.add", (1, 2), task_id=task_id))


@pytest.fixture
async def consumer(broker: MemoryBroker) -> _Consumer:
    """A consumer of ``celery`` on ``broker``."""
    got = _Consumer()
    await broker.consume(QueueSpec("celery", ExchangeSpec(""), "celery"), got)
    return got


async def test_default_exchange_routes_by_queue_name(broker: MemoryBroker) -> None:
    """Routing key = queue name; an unroutable message is recorded as published, then lost."""
    declare(broker, "a")
    await _publish(broker, "to-a", queue="a")
    await _publish(broker, "nowhere", queue="missing")
    assert [m.headers["id"] for m in broker.messages("a")] == ["to-a"]
    assert [m.headers["id"] for _, _, m in broker.published] == ["to-a", "nowhere"]
    assert await broker.message_count("a") == 1


@pytest.mark.parametrize(("kind", "binding", "routing_key", "routed"), [
    ("direct", "jobs", "jobs", True),
    ("direct", "jobs", "other", False),
    ("topic", "jobs.#", "jobs.images.big", True),
    ("topic", "jobs.*", "other.x", False),
    ("fanout", "", "anything", True),
])
async def test_named_exchanges_route_by_binding(broker: MemoryBroker, kind: str, binding: str,
                                                routing_key: str, routed: bool) -> None:
    """Direct, topic and fanout exchanges deliver to the queues bound as the spec says."""
    broker.declare(QueueSpec("q", ExchangeSpec("ex", kind), binding))
    await broker.publish("ex", routing_key, encoded("t.add", task_id="m"))
    assert await broker.message_count("q") == (1 if routed else 0)


async def test_deliveries_carry_the_message_and_its_route(
        broker: MemoryBroker, consumer: _Consumer) -> None:
    """A delivery exposes body, headers and properties, the queue, exchange and routing key."""
    message = encoded("t.add", (1, 2), task_id="one")
    await broker.publish("", "celery", message)
    await until(lambda: consumer.got)
    delivery = consumer.got[0]
    assert (delivery.body, delivery.headers, delivery.content_type) == (
        message.body, message.headers, message.content_type)
    assert (delivery.queue, delivery.exchange, delivery.routing_key, delivery.redelivered) == (
        "celery", "", "celery", False)


async def test_prefetch_window_bounds_unsettled_deliveries(
        broker: MemoryBroker, consumer: _Consumer) -> None:
    """With a window of two, two messages are out until one is settled, in queue order."""
    await broker.set_prefetch(2)
    await _publish(broker, "m1", "m2", "m3", "m4")
    await until(lambda: len(consumer.got) == 2)
    await asyncio.sleep(0.01)  # not to sync: a leaking window would deliver more meanwhile
    assert consumer.ids == ["m1", "m2"]
    await consumer.got[0].ack()
    await until(lambda: len(consumer.got) == 3)
    assert consumer.ids == ["m1", "m2", "m3"]


async def test_settling_happens_once(broker: MemoryBroker, consumer: _Consumer) -> None:
    """After an ack, a reject (or a second ack) does nothing and records nothing."""
    await _publish(broker, "m1")
    await until(lambda: consumer.got)
    delivery = consumer.got[0]
    assert await delivery.ack() and delivery.settled
    await delivery.reject(requeue=True)
    await delivery.ack()
    assert broker.settled_ids() == {"acked": ["m1"], "rejected": []}
    assert await broker.message_count("celery") == 0


async def test_requeue_puts_it_first_flagged_redelivered(broker: MemoryBroker) -> None:
    """A requeued message goes back to the head of its queue with ``redelivered`` set; a
    plain reject drops it."""
    declare(broker)
    await _publish(broker, "m1", "m2", "m3")
    first, second = await broker.get("celery"), await broker.get("celery")
    assert first is not None and second is not None
    await second.requeue()
    await first.reject(requeue=False)
    again = await broker.get("celery")
    assert again is not None and again.redelivered and again.headers["id"] == "m2"
    assert [(d.headers["id"], r) for d, r in broker.rejected] == [("m2", True), ("m1", False)]
    assert [m.headers["id"] for m in broker.messages("celery")] == ["m3"]


async def test_held_delivery_widens_the_window_while_held(
        broker: MemoryBroker, consumer: _Consumer) -> None:
    """A held delivery (an ETA) lets one more message through; the window shrinks back after."""
    await broker.set_prefetch(1)
    await _publish(broker, "eta", "next")
    await until(lambda: consumer.got)
    held = consumer.got[0].hold()
    async with held:
        assert broker.prefetch == 2
        await until(lambda: len(consumer.got) == 2)
    assert broker.prefetch == 1 and consumer.ids == ["eta", "next"]


async def test_hold_without_a_window_changes_nothing(broker: MemoryBroker) -> None:
    """With no prefetch limit (0), holding leaves it unlimited."""
    declare(broker)
    await _publish(broker, "m1")
    delivery = await broker.get("celery")
    assert delivery is not None
    async with delivery.hold():
        assert broker.prefetch == 0
    assert broker.prefetch == 0


async def test_cancel_consumers_stops_delivery_and_keeps_messages(
        broker: MemoryBroker, consumer: _Consumer) -> None:
    """After ``cancel_consumers`` nothing is delivered; the messages wait for a new consumer."""
    await broker.cancel_consumers()
    await _publish(broker, "m1", "m2")
    await asyncio.sleep(0.01)  # not to sync: a live consumer would get them meanwhile
    assert consumer.got == [] and await broker.message_count("celery") == 2
    again = _Consumer()
    await broker.consume(QueueSpec("celery", ExchangeSpec(""), "celery"), again)
    await until(lambda: len(again.got) == 2)
    await broker.close()


async def test_passive_consume_needs_an_existing_queue(broker: MemoryBroker) -> None:
    """``passive=True`` on a queue that does not exist fails, as a passive declare does."""
    with pytest.raises(LookupError):
        await broker.consume(QueueSpec("ghost", ExchangeSpec(""), "ghost"), _Consumer(),
                             passive=True)


async def test_no_ack_consumers_do_not_use_the_prefetch_window(
        broker: MemoryBroker, consumer: _Consumer) -> None:
    """Messages to a ``no_ack`` consumer (the control mailbox) are settled on delivery, so
    they never take task messages' prefetch room."""
    control = _Consumer()
    await broker.consume(QueueSpec("pidbox", ExchangeSpec(""), "pidbox"), control,
                         no_ack=True, purpose="control")
    await broker.set_prefetch(1)
    await _publish(broker, "c1", "c2", "c3", queue="pidbox")
    await until(lambda: len(control.got) == 3)
    await _publish(broker, "task")
    await until(lambda: consumer.got)
    assert consumer.ids == ["task"]
