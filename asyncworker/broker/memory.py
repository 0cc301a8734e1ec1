"""An in-process broker: queues in memory, for fast tests without RabbitMQ.

It keeps AMQP's semantics where tests can observe them: routing through the
default exchange (routing key = queue name) and through named exchanges
bound by ``QueueSpec``, the prefetch window, redelivery with ``redelivered``
set on requeue, and a record of what was acked, rejected and published.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..protocol import OutgoingMessage
from .base import Broker, Delivery, DeliveryHandler
from .topology import ExchangeSpec, QueueSpec


@dataclass(slots=True)
class StoredMessage:
    """A message as it sits in a memory queue."""

    message: OutgoingMessage
    exchange: str
    routing_key: str
    redelivered: bool = False


class MemoryDelivery(Delivery):
    """A message handed to a consumer of a ``MemoryBroker``."""

    __slots__ = ("_broker", "stored")

    def __init__(self, broker: MemoryBroker, stored: StoredMessage, queue: str) -> None:
        super().__init__(queue)
        self._broker = broker
        self.stored = stored

    body = property(lambda self: self.stored.message.body)  # type: ignore[assignment]
    headers = property(lambda self: self.stored.message.headers)  # type: ignore[assignment]
    content_type = property(  # type: ignore[assignment]
        lambda self: self.stored.message.content_type)
    content_encoding = property(  # type: ignore[assignment]
        lambda self: self.stored.message.content_encoding)
    correlation_id = property(  # type: ignore[assignment]
        lambda self: self.stored.message.correlation_id)
    reply_to = property(lambda self: self.stored.message.reply_to)  # type: ignore[assignment]
    priority = property(lambda self: self.stored.message.priority)  # type: ignore[assignment]
    exchange = property(lambda self: self.stored.exchange)  # type: ignore[assignment]
    routing_key = property(lambda self: self.stored.routing_key)  # type: ignore[assignment]
    redelivered = property(lambda self: self.stored.redelivered)  # type: ignore[assignment]

    async def _settle(self, ack: bool, requeue: bool) -> bool:
        self._broker._settled(self, ack, requeue)
        return True

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._broker._held()


@dataclass
class _Queue:
    spec: QueueSpec
    ready: collections.deque[StoredMessage] = field(default_factory=collections.deque)
    handler: DeliveryHandler | None = None
    #: Consumed without acks (the control mailbox): outside the prefetch window.
    no_ack: bool = False


class MemoryBroker(Broker):
    """Queues, exchanges and consumers in this process."""

    display_url = "memory://"

    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}
        #: exchange name -> [(binding key, queue name)]
        self.bindings: dict[str, list[tuple[str, str]]] = {}
        self.exchange_types: dict[str, str] = {}
        #: Every publish, in order: (exchange, routing key, message).
        self.published: list[tuple[str, str, OutgoingMessage]] = []
        #: Every transient publish (monitoring events), kept apart from ``published``.
        self.transient: list[tuple[str, str, OutgoingMessage]] = []
        self.acked: list[MemoryDelivery] = []
        self.rejected: list[tuple[MemoryDelivery, bool]] = []
        self.prefetch = 0
        self._unsettled = 0
        self._wakeup = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Future[None]] = set()
        self.connected = False

    # -- connection ----------------------------------------------------------
    async def connect(self, retry: bool = True) -> None:
        self.connected = True

    async def close(self) -> None:
        await self.cancel_consumers()
        self.connected = False

    # -- topology ------------------------------------------------------------
    def declare(self, spec: QueueSpec) -> None:
        """Create the queue (and its exchange binding) if it does not exist."""
        if spec.name not in self.queues:
            self.queues[spec.name] = _Queue(spec)
        if spec.exchange.name:
            self.exchange_types[spec.exchange.name] = spec.exchange.type
            binding = (spec.routing_key, spec.name)
            bound = self.bindings.setdefault(spec.exchange.name, [])
            if binding not in bound:
                bound.append(binding)

    async def ensure_declared(self, spec: QueueSpec | None, passive: bool) -> None:
        if spec is not None:
            self.declare(spec)

    def _targets(self, exchange: str, routing_key: str) -> list[str]:
        if exchange == "":
            return [routing_key] if routing_key in self.queues else []
        kind = self.exchange_types.get(exchange, "direct")
        out = []
        for key, queue in self.bindings.get(exchange, []):
            if kind == "fanout" or key == routing_key or (
                    kind == "topic" and fnmatch.fnmatchcase(
                        routing_key, key.replace("#", "*"))):
                out.append(queue)
        return out

    # -- publish / consume ---------------------------------------------------
    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        self.published.append((exchange, routing_key, message))
        for name in self._targets(exchange, routing_key):
            self.queues[name].ready.append(StoredMessage(message, exchange, routing_key))
        self._wakeup.set()

    async def publish_transient(self, exchange: ExchangeSpec, routing_key: str,
                                message: OutgoingMessage) -> None:
        self.exchange_types.setdefault(exchange.name, exchange.type)
        self.transient.append((exchange.name, routing_key, message))
        for name in self._targets(exchange.name, routing_key):
            self.queues[name].ready.append(StoredMessage(message, exchange.name, routing_key))
        self._wakeup.set()

    async def consume(self, spec: QueueSpec, handler: DeliveryHandler, passive: bool = False,
                      no_ack: bool = False, purpose: str | None = None) -> None:
        if passive and spec.name not in self.queues:
            raise LookupError(f"queue {spec.name!r} does not exist")
        self.declare(spec)
        self.queues[spec.name].handler = handler
        self.queues[spec.name].no_ack = no_ack
        if self._pump is None:
            self._pump = asyncio.create_task(self._deliver())
        self._wakeup.set()

    async def cancel_consumers(self) -> None:
        for queue in self.queues.values():
            queue.handler = None
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None

    async def cancel_consumer(self, queue: str) -> bool:
        found = self.queues.get(queue)
        if found is None or found.handler is None:
            return False
        found.handler = None
        return True

    async def set_prefetch(self, count: int) -> None:
        self.prefetch = count
        self._wakeup.set()

    async def change_prefetch(self, delta: int) -> None:
        if self.prefetch:
            self.prefetch = max(1, self.prefetch + delta)
            self._wakeup.set()

    async def _deliver(self) -> None:
        # One pump hands messages to handlers while the prefetch window allows.
        while True:
            self._wakeup.clear()
            progressed = False
            for queue in list(self.queues.values()):
                while queue.handler is not None and queue.ready and (
                        queue.no_ack or not self.prefetch or self._unsettled < self.prefetch):
                    stored = queue.ready.popleft()
                    delivery = MemoryDelivery(self, stored, queue.spec.name)
                    if queue.no_ack:
                        delivery.settled = True  # acked on delivery, as AMQP's no_ack
                    else:
                        self._unsettled += 1
                    # As aio-pika does: each message's handler runs in a task.
                    task = asyncio.ensure_future(queue.handler(delivery))
                    self._handlers.add(task)
                    task.add_done_callback(self._handlers.discard)
                    progressed = True
            if not progressed:
                await self._wakeup.wait()

    def _settled(self, delivery: MemoryDelivery, ack: bool, requeue: bool) -> None:
        self._unsettled -= 1
        if ack:
            self.acked.append(delivery)
        else:
            self.rejected.append((delivery, requeue))
            if requeue:
                delivery.stored.redelivered = True
                self.queues[delivery.queue].ready.appendleft(delivery.stored)
        self._wakeup.set()

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[None]:
        self.prefetch += 1 if self.prefetch else 0
        self._wakeup.set()
        try:
            yield
        finally:
            self.prefetch -= 1 if self.prefetch else 0

    # -- inspection ----------------------------------------------------------
    async def get(self, queue: str) -> Delivery | None:
        ready = self.queues[queue].ready
        if not ready:
            return None
        self._unsettled += 1
        return MemoryDelivery(self, ready.popleft(), queue)

    async def message_count(self, queue: str) -> int:
        return len(self.queues[queue].ready)

    def messages(self, queue: str) -> list[OutgoingMessage]:
        """What waits in ``queue`` now (for assertions)."""
        return [stored.message for stored in self.queues[queue].ready]

    def settled_ids(self) -> dict[str, list[Any]]:
        """Task ids acked and rejected so far (for assertions)."""
        return {
            "acked": [d.headers.get("id") for d in self.acked],
            "rejected": [d.headers.get("id") for d, _ in self.rejected],
        }
