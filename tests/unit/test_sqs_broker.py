"""SqsBroker's rules against a fake SQS client: window, settling, FIFO groups, visibility."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from asyncworker.broker.base import Delivery
from asyncworker.broker.sqs import SqsBroker, SqsDelivery, envelope, parse
from asyncworker.broker.topology import ExchangeSpec, QueueSpec
from asyncworker.protocol import OutgoingMessage


class FakeSqs:
    """The calls SqsBroker makes, answered from memory and recorded."""

    def __init__(self, attributes: dict[str, str] | None = None) -> None:
        self.ready: dict[str, collections.deque[dict[str, Any]]] = collections.defaultdict(
            collections.deque)
        self.attributes = attributes or {"VisibilityTimeout": "30"}
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []
        self.sent: list[dict[str, Any]] = []
        self.asked: list[int] = []

    def add(self, queue: str, task_id: str, group: str | None = None) -> None:
        message = OutgoingMessage(body=b"[[], {}, {}]", headers={"id": task_id, "task": "t"},
                                  content_type="application/json", content_encoding="utf-8",
                                  correlation_id=task_id, reply_to=None, priority=None,
                                  expiration_ms=None)
        attributes = {"ApproximateReceiveCount": "1"}
        if group:
            attributes["MessageGroupId"] = group
        self.ready[f"u/{queue}"].append({"ReceiptHandle": f"rh-{task_id}", "Attributes": attributes,
                                         "Body": envelope.encode(message, "", queue)})

    async def get_queue_url(self, QueueName: str) -> dict[str, Any]:
        return {"QueueUrl": f"u/{QueueName}"}

    async def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        return {"Attributes": self.attributes}

    async def receive_message(self, QueueUrl: str, MaxNumberOfMessages: int,
                              **kwargs: Any) -> dict[str, Any]:
        self.asked.append(MaxNumberOfMessages)
        ready = self.ready[QueueUrl]
        if not ready:
            await asyncio.sleep(0.02)
            return {}
        return {"Messages": [ready.popleft() for _ in range(min(MaxNumberOfMessages,
                                                                  len(ready)))]}

    async def delete_message_batch(self, QueueUrl: str,
                                   Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.deleted += [e["ReceiptHandle"] for e in Entries]
        return {"Successful": Entries}

    async def change_message_visibility_batch(
            self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.visibility += [(e["ReceiptHandle"], e["VisibilityTimeout"]) for e in Entries]
        return {"Successful": Entries}

    async def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {}


def broker_with(fake: FakeSqs, **options: Any) -> SqsBroker:
    broker = SqsBroker(parse("sqs://localhost:1", {"polling_interval": 0, **options}))
    broker._clients[broker.config.credentials] = fake
    return broker


def spec(name: str) -> QueueSpec:
    return QueueSpec(name, ExchangeSpec(name), name)


async def settle_soon() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def consume(broker: SqsBroker, queue: str) -> list[Delivery]:
    got: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery)

    await broker.consume(spec(queue), handler)
    return got


async def test_no_more_in_flight_than_the_window() -> None:
    fake = FakeSqs()
    for i in range(5):
        fake.add("q", f"t{i}")
    broker = broker_with(fake)
    await broker.set_prefetch(2)
    got = await consume(broker, "q")
    await settle_soon()
    assert len(got) == 2 and max(fake.asked) <= 2
    assert await got[0].ack()
    await settle_soon()
    assert len(got) == 3
    assert fake.deleted == ["rh-t0"]
    async with got[1].hold():  # an ETA held: one more slot
        await settle_soon()
        assert len(got) == 4
    await broker.cancel_consumers()
    await broker.close()


async def test_settling_deletes_requeues_or_leaves_to_redrive() -> None:
    fake = FakeSqs()
    for i in range(3):
        fake.add("q", f"t{i}")
    broker = broker_with(fake)
    got = await consume(broker, "q")
    await settle_soon()
    await got[0].ack()
    await got[1].reject(requeue=True)
    await got[2].reject(requeue=False)
    assert fake.deleted == ["rh-t0", "rh-t2"]  # rejected for good: deleted, as kombu
    assert fake.visibility == [("rh-t1", 0)]  # requeued: visible again at once
    await broker.close()

    redriven = FakeSqs({"VisibilityTimeout": "30", "RedrivePolicy": "{}"})
    redriven.add("q", "t9")
    broker = broker_with(redriven)
    got = await consume(broker, "q")
    await settle_soon()
    await got[0].reject(requeue=False)
    assert redriven.deleted == [] and redriven.visibility == [("rh-t9", 0)]
    await broker.close()


async def test_fifo_hands_a_group_over_one_at_a_time() -> None:
    fake = FakeSqs()
    for i in range(3):
        fake.add("jobs.fifo", f"a{i}", group="a")
    fake.add("jobs.fifo", "b0", group="b")
    broker = broker_with(fake)
    got = await consume(broker, "jobs.fifo")
    await settle_soon()
    assert [d.headers["id"] for d in got] == ["a0", "b0"]
    await got[0].ack()
    await settle_soon()
    assert [d.headers["id"] for d in got] == ["a0", "b0", "a1"]
    # a1 requeued: a2 must not overtake it, so it goes back to SQS too.
    await got[2].reject(requeue=True)
    await settle_soon()
    assert len(got) == 3
    assert sorted(fake.visibility) == [("rh-a1", 0), ("rh-a2", 0)]
    assert [d.headers["id"] for d in broker._inflight.values()] == ["b0"]
    await broker.close()


async def test_messages_held_too_long_are_hidden_again() -> None:
    fake = FakeSqs({"VisibilityTimeout": "10"})
    fake.add("q", "t0")
    broker = broker_with(fake)
    got = await consume(broker, "q")
    await settle_soon()
    delivery = got[0]
    assert isinstance(delivery, SqsDelivery)
    now = time.monotonic()
    await broker._extend_due(now + 2)  # 8 s left of 10: not yet
    assert fake.visibility == []
    await broker._extend_due(now + 6)  # 4 s left: hidden for another 10
    assert fake.visibility == [("rh-t0", 10)]
    assert delivery.visible_until >= now + 16
    assert not delivery.is_stale()
    delivery.visible_until = time.monotonic() - 1
    assert delivery.is_stale()  # SQS may have handed it to someone else
    await broker.close()


async def test_publishing_to_fifo_sets_group_and_deduplication() -> None:
    fake = FakeSqs()
    broker = broker_with(fake, queue_name_prefix="p.")
    message = OutgoingMessage(body=b"[]", headers={"id": "x"}, content_type="application/json",
                              content_encoding="utf-8", correlation_id="x", reply_to=None,
                              priority=None, expiration_ms=None)
    await broker.ensure_declared(spec("jobs.fifo"), passive=False)
    await broker.publish("jobs.fifo", "jobs.fifo", message)
    await broker.publish("", "plain.q", message)
    fifo, plain = fake.sent
    assert fifo["QueueUrl"] == "u/p-jobs.fifo" and fifo["MessageGroupId"] == "default"
    assert fifo["MessageDeduplicationId"]
    assert plain["QueueUrl"] == "u/p-plain-q" and "MessageGroupId" not in plain
    assert envelope.decode(plain["MessageBody"]).routing_key == "plain.q"
    await broker.close()


async def test_the_control_mailbox_and_events_are_no_ops() -> None:
    fake = FakeSqs()
    broker = broker_with(fake)

    async def handler(delivery: Delivery) -> None:
        raise AssertionError("nothing to deliver")

    mailbox = QueueSpec("n.celery.pidbox", ExchangeSpec("celery.pidbox", "fanout"), "")
    await broker.consume(mailbox, handler, no_ack=True, purpose="control")
    await broker.publish_transient(ExchangeSpec("celeryev", "topic"), "worker.heartbeat",
                                   OutgoingMessage(b"{}", {}, "application/json", "utf-8", "",
                                                   None, None, None))
    assert not broker._sources and fake.sent == [] and fake.asked == []
    await broker.close()


async def test_a_queue_can_be_consumed_again_after_cancel() -> None:
    fake = FakeSqs()
    broker = broker_with(fake)
    got = await consume(broker, "q")
    await settle_soon()
    assert await broker.cancel_consumer("q")
    await settle_soon()
    fake.add("q", "t1")

    async def handler(delivery: Delivery) -> None:
        got.append(delivery)

    await broker.consume(spec("q"), handler)
    await settle_soon()
    assert [d.headers["id"] for d in got] == ["t1"]
    await broker.close()
