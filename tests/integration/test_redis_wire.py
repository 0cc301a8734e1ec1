"""The Redis transport against kombu itself, in one process: each side's
``unacked`` entries are restored by the other, routing goes through the binding
tables kombu writes, and ``FETCH`` records a message in the same step it pops it.

Every test uses a ``global_keyprefix`` of its own (on both sides), so sweeping
with a tiny ``visibility_timeout`` touches nothing but its own keys.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from asyncworker.broker.redis import RedisBroker, parse
from asyncworker.broker.topology import ExchangeSpec, QueueSpec
from asyncworker.protocol import OutgoingMessage

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:" + os.environ.get("ASYNCWORKER_REDIS_PORT", "6379") + "/5"


@pytest.fixture
def prefix() -> str:
    return f"wire{uuid.uuid4().hex[:8]}:"


def kombu_connection(prefix: str, **options: Any) -> Connection:
    return Connection(URL, transport_options={"global_keyprefix": prefix, **options})


@pytest.fixture
async def broker(prefix: str) -> AsyncIterator[RedisBroker]:
    ours = RedisBroker(parse(URL, {"global_keyprefix": prefix, "visibility_timeout": 1},
                             connect_timeout=5))
    await ours.connect(retry=False)
    yield ours
    await ours.close()
    db = redis.Redis.from_url(URL)
    for key in db.scan_iter(prefix + "*"):
        db.delete(key)


def message(task_id: str, priority: int | None = None) -> OutgoingMessage:
    return OutgoingMessage(b'[[1], {}, {}]', {"id": task_id, "task": "x.y"}, "application/json",
                           "utf-8", task_id, None, priority, None)


async def test_kombu_restores_what_we_left_unacked(broker: RedisBroker, prefix: str) -> None:
    queue = f"q{uuid.uuid4().hex[:6]}"
    await broker.publish("", queue, message("t1", priority=6))
    taken = await broker.get(queue)
    assert taken is not None and taken.priority == 6
    # A "crashed" consumer: never settled. kombu's own sweep takes it back.
    await asyncio.sleep(1.1)
    with kombu_connection(prefix, visibility_timeout=1) as conn:
        conn.default_channel.qos.restore_visible(num=100)
        got = conn.SimpleQueue(queue, no_ack=False).get(timeout=5)
        assert got.headers["id"] == "t1" and got.headers.get("redelivered") is True
        assert got.properties["priority"] == 6
        got.ack()


async def test_we_restore_what_kombu_left_unacked(broker: RedisBroker, prefix: str) -> None:
    queue = f"q{uuid.uuid4().hex[:6]}"
    with kombu_connection(prefix) as conn:
        simple = conn.SimpleQueue(queue, no_ack=False)
        simple.put({"n": 1}, headers={"id": "k1"}, priority=3)
        got = simple.get(timeout=5)  # delivered to kombu, never acked (its worker died)
        assert got.headers["id"] == "k1"
        tag = got.delivery_tag
        db = redis.Redis.from_url(URL)
        assert db.hexists(prefix + "unacked", tag)
        await asyncio.sleep(1.2)
        assert await broker.visibility.sweep() == 1
        assert not db.hexists(prefix + "unacked", tag)
        # Back on its priority list, marked redelivered, and ours to take.
        assert db.llen(f"{prefix}{queue}\x06\x163") == 1
        again = await broker.get(queue)
        assert again is not None and again.headers["id"] == "k1" and again.redelivered
        assert again.priority == 3
        assert await again.ack()
        assert not db.hexists(prefix + "unacked", tag)


async def test_routing_through_kombus_bindings_both_ways(broker: RedisBroker, prefix: str) -> None:
    name = f"q{uuid.uuid4().hex[:6]}"
    exchange = Exchange(f"ex.{name}", "direct")
    with kombu_connection(prefix) as conn:
        Queue(name, exchange, routing_key="key.a")(conn.default_channel).declare()
        # Our publish to kombu's exchange lands on kombu's queue.
        broker.exchange_types[exchange.name] = "direct"
        await broker.publish(exchange.name, "key.a", message("t2"))
        await broker.publish(exchange.name, "nobody", message("lost"))
        got = conn.SimpleQueue(Queue(name, exchange, routing_key="key.a")).get(timeout=5)
        assert got.headers["id"] == "t2"
        got.ack()
        # And kombu's publish reaches a queue we bound, with a topic pattern.
        topic = f"topic.{name}"
        spec = QueueSpec(f"{name}.t", ExchangeSpec(topic, "topic"), "task.#")
        await broker.declare(spec)
        with conn.Producer() as producer:
            # kombu routes by the type its process declared (as Celery's producer does).
            Exchange(topic, "topic")(conn.default_channel).declare()
            producer.publish({"x": 1}, exchange=Exchange(topic, "topic"),
                             routing_key="task.succeeded.now", headers={"id": "t3"})
        taken = await broker.get(spec.name)
        assert taken is not None and taken.headers["id"] == "t3"
        assert taken.exchange == topic and taken.routing_key == "task.succeeded.now"
        await taken.ack()


async def test_fetch_records_in_the_step_it_pops(broker: RedisBroker, prefix: str) -> None:
    queue = f"q{uuid.uuid4().hex[:6]}"
    await broker.publish("", queue, message("t4"))
    db = redis.Redis.from_url(URL)
    before = time.time()
    got = await broker._record([queue], None)
    assert len(got) == 1
    source, raw, tag = got[0]
    assert source == queue and b"t4" in raw
    # Popped and recorded by one script: there is no moment with the message in
    # neither place.
    assert db.llen(prefix + queue) == 0
    assert db.hget(prefix + "unacked", tag) is not None
    assert db.zscore(prefix + "unacked_index", tag) >= before - 1



async def test_a_message_restored_elsewhere_is_stale_and_never_settled_here(
        broker: RedisBroker, prefix: str) -> None:
    queue = f"q{uuid.uuid4().hex[:6]}"
    taken: asyncio.Queue[Any] = asyncio.Queue()

    async def hold(delivery: Any) -> None:
        await taken.put(delivery)

    await broker.set_prefetch(1)
    await broker.consume(QueueSpec(queue, ExchangeSpec(""), queue), hold)
    await broker.publish("", queue, message("t5"))
    delivery = await asyncio.wait_for(taken.get(), 10)
    # Another consumer's sweep takes it back (as after a stall past the timeout).
    other = RedisBroker(parse(URL, {"global_keyprefix": prefix}, connect_timeout=5))
    try:
        assert await other.visibility._restore(delivery.tag) == 1
    finally:
        await other.close()
    await broker.visibility.keep()
    assert delivery.is_stale() and broker.unsettled == {}
    # Acking the stale copy must not touch the restored one's bookkeeping; the
    # freed slot takes the restored copy, which is settled normally.
    assert await delivery.ack() is False
    again = await asyncio.wait_for(taken.get(), 10)
    assert again.tag == delivery.tag and again.redelivered and not again.is_stale()
    db = redis.Redis.from_url(URL)
    assert db.hexists(prefix + "unacked", again.tag)
    assert await again.ack()
    assert not db.hexists(prefix + "unacked", again.tag)


async def test_queues_take_turns_and_priorities_go_first(broker: RedisBroker) -> None:
    first, second = (f"q{uuid.uuid4().hex[:6]}" for _ in range(2))
    for n in range(3):
        await broker.publish("", first, message(f"a{n}"))
        await broker.publish("", second, message(f"b{n}"))
    await broker.publish("", second, message("urgent", priority=0))  # step 0, as the rest
    await broker.publish("", first, message("late", priority=9))
    order: list[str] = []

    async def take(delivery: Any) -> None:
        order.append(delivery.headers["id"])
        await delivery.ack()

    await broker.set_prefetch(1)  # one at a time: the order is the broker's
    broker._held = -1  # no room until both queues are consumed
    await broker.consume(QueueSpec(first, ExchangeSpec(""), first), take)
    await broker.consume(QueueSpec(second, ExchangeSpec(""), second), take)
    broker._held = 0
    broker._wake.set()
    for _ in range(100):
        if len(order) == 8:
            break
        await asyncio.sleep(0.05)
    # Round robin between the queues (kombu's fair cycle), step 9 after all of step 0.
    assert order[:6] == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert order[6:] == ["urgent", "late"]
