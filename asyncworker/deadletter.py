"""Dead letters: rejected messages are kept, with why, and can be replayed.

A queue declared with ``x-dead-letter-exchange`` gets a plain reject and
RabbitMQ moves the message (with its ``x-death`` header). Any other queue
keeps its Celery-identical declaration; asyncworker publishes a copy to
``<queue><task_dead_letter_suffix>`` itself, with ``x-asyncworker-*`` headers
(reason, exception, worker, time, where it came from), and acks the original
only once the copy is confirmed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .broker.base import Broker, Delivery
from .broker.topology import ExchangeSpec, QueueSpec, Topology
from .logging import get_logger
from .protocol import peek_task_id
from .settings import Settings

log = get_logger("deadletter")

PREFIX = "x-asyncworker-"
REASON = PREFIX + "reason"
EXCEPTION = PREFIX + "exception"
WORKER = PREFIX + "worker"
TIME = PREFIX + "time"
ORIGIN_EXCHANGE = PREFIX + "original-exchange"
ORIGIN_ROUTING_KEY = PREFIX + "original-routing-key"
ORIGIN_QUEUE = PREFIX + "original-queue"


def dlq_spec(queue: str, suffix: str) -> QueueSpec:
    """The dead-letter queue of ``queue``: durable, on the default exchange."""
    name = queue + suffix
    return QueueSpec(name, ExchangeSpec(""), name)


class DeadLetters:
    """Rejects without requeue, keeping the message in a dead-letter queue."""

    def __init__(self, broker: Broker, topology: Topology, settings: Settings) -> None:
        self.broker = broker
        self.topology = topology
        self.settings = settings

    def _broker_dead_letters(self, queue: str) -> bool:
        spec = self.topology.queues.get(queue)
        return spec is not None and "x-dead-letter-exchange" in spec.arguments

    async def reject(self, delivery: Delivery, reason: str,
                     exc: BaseException | None = None) -> bool:
        """Reject ``delivery`` for good; True when it is kept somewhere."""
        if not self.settings.task_dead_letter or self._broker_dead_letters(delivery.queue):
            await delivery.reject(requeue=False)
            return self._broker_dead_letters(delivery.queue)
        try:
            await self.copy(delivery, reason, exc)
        except Exception as err:
            log.error("could not publish dead letter; rejecting",
                      task_id=peek_task_id(delivery.headers, delivery.correlation_id),
                      error=repr(err))
            await delivery.reject(requeue=False)
            return False
        await delivery.ack()
        return True

    async def copy(self, delivery: Delivery, reason: str,
                   exc: BaseException | None = None) -> None:
        """Publish a copy of ``delivery`` to the dead-letter queue of its queue."""
        spec = dlq_spec(delivery.queue, self.settings.task_dead_letter_suffix)
        await self.broker.ensure_declared(spec, passive=False)
        headers = dict(delivery.headers)
        headers.update({
            REASON: reason,
            EXCEPTION: f"{type(exc).__name__}: {exc}" if exc is not None else None,
            WORKER: self.settings.worker_nodename,
            TIME: datetime.now(UTC).isoformat(),
            ORIGIN_EXCHANGE: delivery.exchange,
            ORIGIN_ROUTING_KEY: delivery.routing_key,
            ORIGIN_QUEUE: delivery.queue,
        })
        await self.broker.publish("", spec.name, delivery.outgoing(headers))
        log.warning("message dead-lettered", task_id=peek_task_id(
            delivery.headers, delivery.correlation_id), queue=spec.name, reason=reason)


@dataclass(slots=True)
class DeadLetter:
    """One message in a dead-letter queue, as listed."""

    task_id: str | None
    task: str | None
    reason: str | None
    exception: str | None
    worker: str | None
    time: str | None
    exchange: str
    routing_key: str


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def describe(message: Delivery) -> DeadLetter:
    """Where a dead letter came from and why, by our headers or the broker's x-death."""
    headers: dict[str, Any] = dict(message.headers)
    death: dict[str, Any] = {}
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = dict(deaths[0])
    exchange = headers.get(ORIGIN_EXCHANGE)
    routing_key = headers.get(ORIGIN_ROUTING_KEY)
    if exchange is None:
        exchange = death.get("exchange", "")
        keys = death.get("routing-keys") or [death.get("queue", "")]
        routing_key = keys[0] if keys else ""
    return DeadLetter(
        task_id=peek_task_id(headers, message.correlation_id),
        task=_text(headers.get("task")),
        reason=_text(headers.get(REASON) or death.get("reason")),
        exception=_text(headers.get(EXCEPTION)),
        worker=_text(headers.get(WORKER)),
        time=_text(headers.get(TIME) or death.get("time")),
        exchange=str(exchange or ""),
        routing_key=str(routing_key or ""),
    )


async def list_dead_letters(broker: Broker, dlq: str, limit: int) -> list[DeadLetter]:
    """Read up to ``limit`` dead letters without removing them."""
    seen: list[Delivery] = []
    try:
        while len(seen) < limit:
            message = await broker.get(dlq)
            if message is None:
                break
            seen.append(message)
        return [describe(m) for m in seen]
    finally:
        for message in seen:
            await message.requeue()


async def replay_dead_letters(broker: Broker, dlq: str, limit: int) -> int:
    """Publish up to ``limit`` dead letters back where they came from; returns the count.

    Only the messages present at the start are taken, so a message that fails
    again and comes back is not replayed in a loop.
    """
    present = await broker.message_count(dlq)
    replayed = 0
    while replayed < min(limit, present):
        message = await broker.get(dlq)
        if message is None:
            break
        info = describe(message)
        headers = {k: v for k, v in message.headers.items()
                   if not k.startswith(PREFIX) and k != "x-death"}
        await broker.publish(info.exchange, info.routing_key, message.outgoing(headers))
        await message.ack()
        replayed += 1
        log.info("dead letter replayed", task_id=info.task_id, exchange=info.exchange,
                 routing_key=info.routing_key)
    return replayed


def as_json(letters: list[DeadLetter]) -> str:
    """JSON lines for the command line."""
    return "\n".join(json.dumps({k: getattr(x, k) for k in DeadLetter.__slots__})
                     for x in letters)

