"""RabbitMQ through aio-pika: robust connection, declarations, consume, publish.

The connection is robust: aio-pika reconnects and restores channels, QoS,
declarations and consumers. Messages that were unacked when the link dropped
come back from the broker with ``redelivered`` set; acking them on the old
channel fails, which ``settle`` reports instead of raising.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from ..logging import get_logger, redact_url
from ..protocol import OutgoingMessage
from .topology import ExchangeSpec, QueueSpec

log = get_logger("broker")

# Seconds between reconnection attempts after the broker link drops.
RECONNECT_INTERVAL = 1.0

MessageHandler = Callable[[AbstractIncomingMessage], Awaitable[None]]


def amqp_url(url: str, heartbeat: int | None = None) -> str:
    """Turn a Celery broker URL into one aio-pika accepts.

    Celery writes the default vhost as ``//`` (path ``/`` plus the vhost ``/``)
    and allows ``pyamqp://``; aio-pika wants ``amqp://host/`` for vhost ``/``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[-1]
    if scheme in ("pyamqp", "librabbitmq"):
        scheme = "amqp"
    path = parts.path
    if path in ("", "/", "//"):
        path = "/"
    query = dict(parse_qsl(parts.query))
    if heartbeat is not None and "heartbeat" not in query:
        query["heartbeat"] = str(heartbeat)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), parts.fragment))


class AmqpBroker:
    """One robust connection with a consuming channel and a confirming publish channel."""

    def __init__(self, url: str, heartbeat: int = 60, connect_timeout: float = 10.0,
                 connection_name: str | None = None) -> None:
        self.url = amqp_url(url, heartbeat)
        self.connection_name = connection_name
        self.display_url = redact_url(url)
        self.connect_timeout = connect_timeout
        self.connection: AbstractRobustConnection | None = None
        # One channel per purpose: a channel error (say, a mailbox queue held by
        # another node of the same name) must not stop task consumption.
        self._channels: dict[str, AbstractChannel] = {}
        self._exchanges: dict[str, AbstractExchange] = {}
        self._queues: dict[str, AbstractQueue] = {}
        self._consumers: dict[str, str] = {}
        self._declared: set[str] = set()
        self._lock = asyncio.Lock()

    async def connect(self, retry: bool = True) -> None:
        """Connect, retrying with backoff while the broker is unreachable."""
        delay = 0.5
        while True:
            try:
                self.connection = await aio_pika.connect_robust(
                    self.url, timeout=self.connect_timeout,
                    reconnect_interval=RECONNECT_INTERVAL,
                    client_properties=(
                        {"connection_name": self.connection_name}
                        if self.connection_name else None),
                )
                self.connection.reconnect_callbacks.add(self._on_reconnect)
                break
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                if not retry:
                    raise
                log.warning("broker unreachable, retrying", url=self.display_url,
                            error=str(exc) or type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        log.info("connected to broker", url=self.display_url)

    def _on_reconnect(self, *_: Any) -> None:
        # Declarations are per connection for the producer; redo them lazily.
        self._declared.clear()
        log.warning("reconnected to broker; unacked messages will be redelivered",
                    url=self.display_url)

    async def close(self) -> None:
        """Close channels and the connection."""
        if self.connection is not None:
            await self.connection.close()
            self.connection = None
        self._channels.clear()
        self._exchanges.clear()
        self._queues.clear()
        self._declared.clear()

    async def _channel(self, publish: bool, purpose: str | None = None) -> AbstractChannel:
        name = purpose or ("publish" if publish else "consume")
        async with self._lock:
            if self.connection is None:
                await self.connect()
            assert self.connection is not None
            channel = self._channels.get(name)
            if channel is None or channel.is_closed:
                channel = await self.connection.channel(publisher_confirms=publish)
                self._channels[name] = channel
            return channel

    async def set_qos(self, prefetch_count: int, global_: bool = True) -> None:
        """Set basic.qos on the consuming channel (0 means unlimited).

        Channel-wide (global) by default: RabbitMQ applies a per-consumer
        prefetch only to consumers started after it, so raising it for held
        ETA messages would do nothing; Celery uses the global flag on RabbitMQ
        for the same reason. Quorum queues refuse global QoS.
        """
        channel = await self._channel(publish=False)
        await channel.set_qos(prefetch_count=prefetch_count if prefetch_count <= 65535 else 0,
                              global_=global_)

    async def _exchange(self, channel: AbstractChannel, spec: ExchangeSpec,
                        passive: bool) -> AbstractExchange:
        if spec.name == "":
            return channel.default_exchange
        return await channel.declare_exchange(
            spec.name, spec.type, durable=spec.durable, auto_delete=spec.auto_delete,
            passive=passive,
        )

    async def declare(self, spec: QueueSpec, passive: bool = False,
                      publish: bool = False, purpose: str | None = None) -> AbstractQueue:
        """Declare a queue, its exchange and binding exactly as kombu would."""
        channel = await self._channel(publish=publish, purpose=purpose)
        queue = await channel.declare_queue(
            spec.name,
            durable=spec.durable,
            exclusive=spec.exclusive,
            auto_delete=spec.auto_delete,
            arguments=spec.arguments or None,
            passive=passive,
        )
        if spec.exchange.name:
            exchange = await self._exchange(channel, spec.exchange, passive)
            if not passive:
                await queue.bind(exchange, routing_key=spec.routing_key)
        return queue

    async def consume(self, spec: QueueSpec, handler: MessageHandler, passive: bool,
                      no_ack: bool = False, purpose: str | None = None) -> None:
        """Declare ``spec`` and start consuming it (manual acks unless ``no_ack``)."""
        queue = await self.declare(spec, passive=passive, purpose=purpose)
        self._queues[spec.name] = queue
        self._consumers[spec.name] = await queue.consume(handler, no_ack=no_ack)
        log.info("consuming", queue=spec.name, exchange=spec.exchange.name,
                 routing_key=spec.routing_key, arguments=spec.arguments)

    async def cancel_consumers(self) -> None:
        """Stop receiving new messages; delivered ones stay unacked until settled."""
        for name, tag in list(self._consumers.items()):
            try:
                await self._queues[name].cancel(tag)
            except Exception as exc:  # the channel may already be gone
                log.warning("cancel consumer failed", queue=name, error=repr(exc))
        self._consumers.clear()

    async def ensure_declared(self, spec: QueueSpec | None, passive: bool) -> None:
        """Declare a routing target once per connection, as Celery's producer does."""
        if spec is None or spec.name in self._declared:
            return
        await self.declare(spec, passive=passive, publish=True)
        self._declared.add(spec.name)

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        """Publish a task message and wait for the broker's confirm."""
        channel = await self._channel(publish=True)
        target = self._exchanges.get(exchange)
        if target is None:
            target = (channel.default_exchange if exchange == ""
                      else await channel.get_exchange(exchange, ensure=False))
            self._exchanges[exchange] = target
        await target.publish(
            aio_pika.Message(
                message.body,
                headers=message.headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                priority=message.priority or 0,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                expiration=(message.expiration_ms / 1000.0
                            if message.expiration_ms is not None else None),
            ),
            routing_key=routing_key,
        )

    async def republish(self, incoming: AbstractIncomingMessage) -> None:
        """Publish a copy of a received message back where it came from."""
        copy = OutgoingMessage(
            body=incoming.body,
            headers=dict(incoming.headers or {}),
            content_type=incoming.content_type or "application/json",
            content_encoding=incoming.content_encoding or "utf-8",
            correlation_id=incoming.correlation_id or "",
            reply_to=incoming.reply_to,
            priority=incoming.priority,
            expiration_ms=None,
        )
        await self.publish(incoming.exchange or "", incoming.routing_key or "", copy)


def is_stale(message: AbstractIncomingMessage) -> bool:
    """True when the message came on a channel that has since closed.

    The broker has requeued it (and may have sent it again on the new channel),
    so running it would run the task twice.
    """
    try:
        message.channel  # noqa: B018 - raises once the channel is closed
    except Exception:
        return True
    return False


async def settle(message: AbstractIncomingMessage, action: str, requeue: bool = False,
                 **context: Any) -> bool:
    """Ack, reject or requeue; report (not raise) when the channel is gone."""
    try:
        if action == "ack":
            await message.ack()
        elif action == "reject":
            await message.reject(requeue=requeue)
        else:
            raise ValueError(action)
        return True
    except Exception as exc:
        # After a reconnect the delivery tag is void; the broker redelivers.
        log.warning("could not settle message; the broker will redeliver it",
                    action=action, error=repr(exc), **context)
        return False
