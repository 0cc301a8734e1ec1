"""What the worker needs from a message broker, whatever the transport.

A broker consumes queues and hands each message over as a ``Delivery``: the
body, headers and properties of a Celery task message, plus the verbs that
settle it (``ack``, ``reject``, requeue). The transport's own rules stay behind
this line: AMQP's prefetch window and its channel staleness live in
``amqp.py``; ``memory.py`` is the same contract in process, for tests.

Adding a transport (Redis lists, SQS) means one new file that implements
``Broker`` and ``Delivery``, and a scheme in ``create``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..logging import get_logger
from ..protocol import MessageTemplate, OutgoingMessage
from .topology import ExchangeSpec, QueueSpec

log = get_logger("broker")


class Delivery(abc.ABC):
    """One received message and the means to settle it exactly once.

    ``ack`` / ``reject`` report failure (a lost channel: the broker redelivers)
    by returning False instead of raising, and do nothing once settled.
    """

    __slots__ = ("queue", "settled")

    # Message properties, as Celery's producers set them.
    body: bytes
    headers: dict[str, Any]
    content_type: str | None
    content_encoding: str | None
    correlation_id: str | None
    reply_to: str | None
    priority: int | None
    exchange: str
    routing_key: str
    redelivered: bool

    def __init__(self, queue: str) -> None:
        #: The queue it was consumed from.
        self.queue = queue
        self.settled = False

    async def ack(self) -> bool:
        """Acknowledge: the broker forgets the message."""
        if self.settled:
            return True
        self.settled = True
        return await self._settle(ack=True, requeue=False)

    async def reject(self, requeue: bool = False) -> bool:
        """Reject: back to the queue when ``requeue``, else dropped or dead-lettered."""
        if self.settled:
            return True
        self.settled = True
        return await self._settle(ack=False, requeue=requeue)

    async def requeue(self) -> bool:
        """Give the message back to the broker to deliver again."""
        return await self.reject(requeue=True)

    @abc.abstractmethod
    async def _settle(self, ack: bool, requeue: bool) -> bool:
        """Tell the transport; False when it could not (it will redeliver)."""

    def is_stale(self) -> bool:
        """True when the transport has already taken the message back.

        AMQP: the channel it came on has closed, so the broker requeued it and
        may have sent it again; running it would run the task twice.
        """
        return False

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Keep this message aside (an ETA) without it using a prefetch slot."""
        return _NOTHING_HELD

    def outgoing(self, headers: dict[str, Any] | None = None) -> OutgoingMessage:
        """A copy of this message to publish again (``headers`` replace its own)."""
        return OutgoingMessage(
            body=self.body,
            headers=dict(self.headers) if headers is None else headers,
            content_type=self.content_type or "application/json",
            content_encoding=self.content_encoding or "utf-8",
            correlation_id=self.correlation_id or "",
            reply_to=self.reply_to,
            priority=self.priority,
            expiration_ms=None,
        )


class _NothingHeld(contextlib.AbstractAsyncContextManager[None]):
    async def __aexit__(self, *_: Any) -> None:
        return None


_NOTHING_HELD = _NothingHeld()

DeliveryHandler = Callable[[Delivery], Awaitable[None]]


class Broker(abc.ABC):
    """A connection to a message broker: declare, consume, publish."""

    #: The URL without its password, for logs.
    display_url: str = ""

    def node_url(self) -> str | None:
        """The URL of the node in use, when ``broker_url`` may name several."""
        return None

    @abc.abstractmethod
    async def connect(self, retry: bool = True) -> None:
        """Connect (retrying while unreachable, unless ``retry`` is False)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every channel and the connection."""

    @abc.abstractmethod
    async def consume(self, spec: QueueSpec, handler: DeliveryHandler, passive: bool = False,
                      no_ack: bool = False, purpose: str | None = None) -> None:
        """Declare ``spec`` and call ``handler`` for each message it delivers.

        ``purpose`` keeps unrelated consumers apart (the control mailbox must
        not share a failure domain with task consumption).
        """

    @abc.abstractmethod
    async def cancel_consumers(self) -> None:
        """Stop receiving task messages; delivered ones stay unsettled."""

    async def cancel_consumer(self, queue: str) -> bool:
        """Stop consuming ``queue`` alone; False when it was not consumed."""
        raise NotImplementedError(f"{type(self).__name__} cannot cancel one consumer")

    @abc.abstractmethod
    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        """Publish and wait until the broker has taken the message."""

    async def publish_copy(self, exchange: str, routing_key: str, template: MessageTemplate,
                           task_id: str) -> None:
        """Publish ``template`` as ``task_id`` (what ``publish`` does with its fill).

        A transport that encodes messages can encode the template once.
        """
        await self.publish(exchange, routing_key, template.fill(task_id))

    def encode_template(self, template: MessageTemplate) -> None:  # noqa: B027 - optional
        """Do now what the first ``publish_copy`` of ``template`` would do once."""

    @abc.abstractmethod
    async def ensure_declared(self, spec: QueueSpec | None, passive: bool) -> None:
        """Declare a routing target once per connection, as Celery's producer does."""

    @abc.abstractmethod
    async def get(self, queue: str) -> Delivery | None:
        """Take one message from ``queue`` without consuming (None when empty)."""

    @abc.abstractmethod
    async def message_count(self, queue: str) -> int:
        """Messages ready in ``queue`` (it must exist)."""

    async def set_prefetch(self, count: int) -> None:  # noqa: B027 - optional
        """How many unsettled task messages may be delivered at once (0: no limit)."""

    async def change_prefetch(self, delta: int) -> None:  # noqa: B027 - optional
        """Widen (or narrow) the prefetch window by ``delta``; unlimited stays unlimited."""

    def prefer_local_prefetch(self, queues: list[QueueSpec]) -> None:  # noqa: B027
        """Told which queues will be consumed, before ``set_prefetch`` (AMQP: quorum)."""

    async def publish_transient(self, exchange: ExchangeSpec, routing_key: str,
                                message: OutgoingMessage) -> None:
        """Publish a message that may be lost (monitoring events): not persisted, no
        confirm awaited, ``exchange`` declared on first use. By default: ``publish``."""
        await self.publish(exchange.name, routing_key, message)

    async def republish(self, delivery: Delivery) -> None:
        """Publish a copy of ``delivery`` back where it came from."""
        await self.publish(delivery.exchange, delivery.routing_key, delivery.outgoing())

    # -- monitoring (readiness probe, metrics) ------------------------------------
    #: Times the connection was re-established after dropping.
    reconnects: int = 0

    #: Whether far-future ETA messages can be parked in delay queues (``delay.py``):
    #: queues with a message TTL that dead-letter back to the task's queue.
    can_park: bool = False

    def is_connected(self) -> bool:
        """Whether the link to the broker is up and task consumption can go on."""
        return True

    def prefetch_window(self) -> int | None:
        """Unsettled task messages the broker may deliver now (None: not a notion here)."""
        return None

