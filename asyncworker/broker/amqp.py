"""RabbitMQ through aio-pika: robust connection, declarations, consume, publish.

Deliveries come straight from aiormq (``raw.py``), not through aio-pika's
message objects. The connection is robust: aio-pika reconnects and restores channels, QoS,
declarations and consumers. Messages that were unacked when the link dropped
come back from the broker with ``redelivered`` set; acking them on the old
channel fails, which ``AmqpDelivery`` reports instead of raising, and a
message whose channel has closed is *stale* (the broker has taken it back).
With a failover list (``broker_url`` naming a cluster's nodes) each reconnect
attempt goes to the next node (``reconnect.py``); the restore re-declares the
topology there and resumes consuming, and the old channel's delivery tags
are never acked on the new one (a new channel starts a new ``AckBatch``).

The prefetch window is AMQP's too: ``basic.qos`` is global on RabbitMQ (a
per-consumer change would not apply to running consumers), and a held ETA
message raises it by one so that it does not take a slot. Quorum queues
refuse global QoS; there the window stays per consumer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq import spec
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelInvalidStateError

from ..backoff import BackoffPolicy, Outage
from ..logging import get_logger, redact_url
from ..protocol import MessageTemplate, OutgoingMessage
from . import frames, urls, wire
from .base import Broker, Delivery, DeliveryHandler
from .raw import RawQueue
from .reconnect import BackoffConnection, quiet_library_logs
from .topology import ExchangeSpec, QueueSpec
from .urls import Failover

log = get_logger("broker")

# Seconds before the first reconnection attempt after the broker link drops;
# later ones back off (``BackoffPolicy``, the ``worker_reconnect_*`` settings).
RECONNECT_INTERVAL = BackoffPolicy().initial
PERSISTENT = 2  # AMQP delivery mode: written to disk before the confirm
TRANSIENT = 1  # kept in memory only (monitoring events)

#: ``broker_transport_options`` a Celery configuration may carry for py-amqp:
#: accepted so it carries over, with no effect here (publishes always wait for
#: the broker's confirm; reconnects follow ``worker_reconnect_*``). Any other
#: name is an error (``options.read``).
TRANSPORT_OPTIONS: dict[str, object] = {
    name: None for name in ("confirm_publish", "max_retries", "interval_start",
                            "interval_step", "interval_max", "read_timeout", "write_timeout")
}


def properties(message: OutgoingMessage) -> spec.Basic.Properties:
    """The AMQP properties of ``message``: persistent, priority 0 when unset.

    The message id is the task id: a message the broker returns (unroutable)
    is matched to its publish by it. Headers always encode (floats as doubles,
    bytes as byte arrays: ``frames.SafeProperties``).
    """
    return frames.SafeProperties(
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=message.headers,
        delivery_mode=PERSISTENT,
        priority=message.priority or 0,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=None if message.expiration_ms is None else str(message.expiration_ms),
        message_id=message.correlation_id,
    )


def template_pieces(template: MessageTemplate) -> list[bytes]:
    """The template's encoded properties, split where the task id goes."""
    pieces: list[bytes] | None = template.encodings.get("amqp")
    if pieces is None:
        encoded = properties(template.message).marshal()
        pieces = template.encodings["amqp"] = encoded.split(template.placeholder.encode())
    return pieces


class SplicedProperties(spec.Basic.Properties):
    """A template's properties, encoded once, with one message's task id spliced in.

    Encoding the ~20 headers of a task message was a fifth of the CPU of
    publishing a burst of ticks; splicing the id into the template's bytes is
    a join.
    """

    def __init__(self, template: MessageTemplate, task_id: bytes) -> None:
        super().__init__(message_id=task_id.decode())
        self._encoded = task_id.join(template_pieces(template))

    def marshal(self) -> bytes:
        return self._encoded


class AmqpDelivery(Delivery):
    """An aiormq message behind the ``Delivery`` interface.

    The message comes straight from aiormq (``RawQueue``): aio-pika's
    ``IncomingMessage`` copied and converted a dozen properties per message
    and started one more asyncio task per delivery, for values read at most
    once here.
    """

    __slots__ = ("broker", "message", "properties")

    def __init__(self, message: DeliveredMessage, queue: str,
                 broker: AmqpBroker | None = None) -> None:
        super().__init__(queue)
        self.message = message
        self.properties: spec.Basic.Properties = message.header.properties
        self.broker = broker

    # Properties are read at most a few times per message: no copies up front.
    @property
    def body(self) -> bytes:  # type: ignore[override]
        return self.message.body

    @property
    def headers(self) -> dict[str, Any]:  # type: ignore[override]
        return self.properties.headers or {}

    @property
    def content_type(self) -> str | None:  # type: ignore[override]
        return self.properties.content_type

    @property
    def content_encoding(self) -> str | None:  # type: ignore[override]
        return self.properties.content_encoding

    @property
    def correlation_id(self) -> str | None:  # type: ignore[override]
        return self.properties.correlation_id

    @property
    def reply_to(self) -> str | None:  # type: ignore[override]
        return self.properties.reply_to

    @property
    def priority(self) -> int | None:  # type: ignore[override]
        priority = self.properties.priority
        return 0 if priority is None else priority  # as aio-pika reported it

    @property
    def exchange(self) -> str:  # type: ignore[override]
        return self.message.exchange or ""

    @property
    def routing_key(self) -> str:  # type: ignore[override]
        return self.message.routing_key or ""

    @property
    def redelivered(self) -> bool:  # type: ignore[override]
        return bool(self.message.redelivered)

    @property
    def delivery_tag(self) -> int | None:
        """The channel's delivery tag (for logs about this message)."""
        return self.message.delivery_tag

    async def _settle(self, ack: bool, requeue: bool) -> bool:
        try:
            tag = self.message.delivery_tag
            channel = self.message.channel
            if tag is None:
                return True  # not a delivery (an empty basic.get)
            if channel.is_closed:
                # Its tags died with it (aio-pika's message raised the same).
                raise ChannelInvalidStateError(f"{channel!r} closed")
            if ack and self.broker is not None:
                self.broker.acks_for(channel).ack(tag)
            elif ack:
                await channel.basic_ack(tag)
            else:
                await channel.basic_reject(tag, requeue=requeue)
                if self.broker is not None:
                    self.broker.acks_for(channel).settled(tag)
            return True
        except Exception as exc:
            # After a reconnect the delivery tag is void; the broker redelivers.
            log.warning("could not settle message; the broker will redeliver it",
                        action="ack" if ack else "reject", requeue=requeue, error=repr(exc),
                        task_id=self.headers.get("id") or self.correlation_id)
            return False

    def is_stale(self) -> bool:
        return bool(self.message.channel.is_closed)

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]:
        if self.broker is None:
            return super().hold()
        return self.broker.qos.held()


class AckBatch:
    """The acks of one channel, sent in as few ``basic.ack`` frames as order allows.

    Delivery tags on a channel are consecutive. Once every tag up to N is
    settled, one ``basic.ack(N, multiple=True)`` acks them all; under load
    that is one frame for dozens of tasks instead of one each (each frame
    costs a marshal and a socket write). Acks are flushed a millisecond
    after the first one queued; an ack stuck behind an unsettled tag (a late-ack task still
    running, an ETA held) is sent on its own at the following flush, so the
    prefetch window never waits on it. Acks are not confirmed in AMQP, so
    sending one a loop turn later changes nothing a client can see; if the
    channel dies first, the broker redelivers, as for any unacked message.
    """

    __slots__ = ("_sender", "_timer", "channel", "floor", "outbox", "pending", "waited")

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        #: Every tag up to here is settled and sent.
        self.floor = 0
        #: Settled tags above the floor: True = ack to send, False = already sent.
        self.pending: dict[int, bool] = {}
        #: Acks that already waited one flush behind an unsettled tag.
        self.waited: set[int] = set()
        #: (tag, multiple) frames not yet handed to the channel, in send order.
        self.outbox: collections.deque[tuple[int, bool]] = collections.deque()
        self._sender: asyncio.Future[None] | None = None
        self._timer: asyncio.Handle | None = None

    def ack(self, tag: int) -> None:
        """Queue the ack of ``tag``."""
        self.pending[tag] = True
        if self._timer is None:
            # A millisecond gathers the acks of several loop turns in one frame.
            self._timer = asyncio.get_running_loop().call_later(0.001, self._flush)

    def settled(self, tag: int) -> None:
        """``tag`` was settled another way (rejected): the floor may pass it."""
        self.pending[tag] = False
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._timer = None
        pending = self.pending
        top = self.floor
        last_ack = 0
        while (state := pending.pop(top + 1, None)) is not None:
            top += 1
            if state:
                last_ack = top
        if top > self.floor:
            # Up to the last tag still to ack: a multiple ack naming a tag the
            # broker no longer holds (sent alone, or rejected) closes the channel.
            if last_ack:
                self._send(last_ack, multiple=True)
            self.floor = top
            self.waited = {tag for tag in self.waited if tag > top}
        for tag, state in list(pending.items()):
            if not state:
                continue
            if tag in self.waited:
                self._send(tag, multiple=False)
                pending[tag] = False
                self.waited.discard(tag)
            else:
                self.waited.add(tag)
        if self.waited:
            self._timer = asyncio.get_running_loop().call_later(0.005, self._flush)

    def _send(self, tag: int, multiple: bool) -> None:
        if self.channel.is_closed:
            return  # the broker requeued everything unacked on it
        # One sender per channel, in order: aiormq's write queue is bounded, and a
        # frame whose put waits for room can be overtaken by a later put. A lone
        # ack overtaken by the multiple ack that covers it names a tag the broker
        # no longer holds, and the broker closes the channel.
        self.outbox.append((tag, multiple))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_in_order())

    async def _send_in_order(self) -> None:
        while self.outbox:
            tag, multiple = self.outbox.popleft()
            try:
                await self.channel.basic_ack(tag, multiple=multiple, wait=False)
            except Exception as exc:
                log.warning("could not send ack; the broker will redeliver", error=repr(exc))


class Qos:
    """basic.qos prefetch that held (ETA) messages raise and lower, applied in order."""

    def __init__(self, broker: AmqpBroker) -> None:
        self.broker = broker
        self.target = 0
        self.applied: int | None = None
        # Global unless a quorum queue is consumed (RabbitMQ refuses it there;
        # then, as in Celery, held ETA messages count against the window).
        self.global_ = True
        self._lock = asyncio.Lock()

    async def adjust(self, delta: int) -> None:
        """Change the prefetch by ``delta`` (0 = unlimited stays unlimited)."""
        if self.target == 0 or not self.global_:
            return
        self.target += delta
        await self.apply()

    async def apply(self) -> None:
        """Send the latest target to the broker if it changed."""
        async with self._lock:
            if self.applied != self.target:
                value = self.target
                await self.broker.set_qos(value, self.global_)
                self.applied = value

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """One more slot while a message is held aside."""
        await self.adjust(+1)
        try:
            yield
        finally:
            await asyncio.shield(self.adjust(-1))


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


class AmqpBroker(Broker):
    """One robust connection with a consuming channel and a confirming publish channel."""

    can_park = True  # TTL + dead-lettering back to the queue: see delay.py

    def __init__(self, url: str | Sequence[str], heartbeat: int = 60,
                 connect_timeout: float = 10.0, connection_name: str | None = None,
                 policy: BackoffPolicy | None = None, strategy: str = "round-robin") -> None:
        #: The URLs of a cluster's nodes, and the one in use (``urls.py``).
        self.failover = Failover(urls.split(url), strategy)
        self.heartbeat = heartbeat
        self.connection_name = connection_name
        self.display_url = urls.redact(url)
        #: Failed connection attempts and recoveries, at start-up and after a drop.
        self.outage = Outage("broker", self.current_url, policy, log)
        self.connect_timeout = connect_timeout
        self.connection: AbstractRobustConnection | None = None
        # One channel per purpose: a channel error (say, a mailbox queue held by
        # another node of the same name) must not stop task consumption.
        self._channels: dict[str, AbstractChannel] = {}
        self._queues: dict[str, AbstractQueue] = {}
        self._consumers: dict[str, str] = {}
        self._declared: set[str] = set()
        self._declaring: dict[str, asyncio.Future[Any]] = {}
        self._lock = asyncio.Lock()
        self.qos = Qos(self)
        self._acks: dict[int, AckBatch] = {}
        # A message whose properties do not decode must not drop the connection.
        frames.install()
        # Frames cut from what the socket has, not read three times each.
        wire.install()

    @property
    def url(self) -> str:
        """The URL to connect to now, as aio-pika takes it."""
        return amqp_url(self.failover.current, self.heartbeat)

    def node_url(self) -> str:
        return self.failover.current

    @property
    def current_url(self) -> str:
        """The node connected to (or tried next), without its password."""
        return redact_url(self.failover.current)

    async def connect(self, retry: bool = True) -> None:
        """Connect, retrying with backoff while no node of ``broker_url`` is reachable.

        Each failed attempt moves to the next URL at once; the backoff pause
        comes after a round in which every URL failed (as kombu paces it). Without
        ``retry``, every URL is tried once before the last error is raised.
        """
        quiet_library_logs()
        while True:
            try:
                connection = await aio_pika.connect_robust(
                    self.url, timeout=self.connect_timeout,
                    reconnect_interval=self.outage.policy.initial,
                    connection_class=BackoffConnection,
                    client_properties=(
                        {"connection_name": self.connection_name}
                        if self.connection_name else None),
                )
                break
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                self.outage.target = self.current_url
                round_over = self.failover.failed()
                if not retry and round_over:
                    raise
                pause = self.outage.failed(exc, pause=round_over)
                if pause:
                    await asyncio.sleep(pause)
        assert isinstance(connection, BackoffConnection)
        # From now on aio-pika reconnects by itself, paced by the same outage,
        # moving through the same URLs.
        connection.outage = self.outage
        connection.failover = self.failover
        connection.amqp_url = self.url_of
        connection.reconnect_callbacks.add(self._on_reconnect)
        self.connection = connection
        self.failover.succeeded()
        self.outage.target = self.current_url
        self.outage.recovered()
        log.info("connected to broker", url=self.current_url)

    def url_of(self, url: str) -> str:
        """``url`` as aio-pika takes it (for the robust connection's next attempt)."""
        return amqp_url(url, self.heartbeat)

    def _on_reconnect(self, *_: Any) -> None:
        # Declarations are per connection for the producer; redo them lazily.
        self._declared.clear()
        self.reconnects += 1
        log.warning("reconnected to broker; unacked messages will be redelivered",
                    url=self.current_url)

    async def close(self) -> None:
        """Close channels and the connection."""
        if self.connection is not None:
            await self.connection.close()
            self.connection = None
        self._channels.clear()
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

    def acks_for(self, channel: Any) -> AckBatch:
        """The ack batch of an (aiormq) channel; a new channel starts a new one."""
        batch = self._acks.get(id(channel))
        if batch is None or batch.channel is not channel:
            self._acks = {k: b for k, b in self._acks.items() if not b.channel.is_closed}
            batch = self._acks[id(channel)] = AckBatch(channel)
        return batch

    def prefer_local_prefetch(self, queues: list[QueueSpec]) -> None:
        if any(q.arguments.get("x-queue-type") == "quorum" for q in queues):
            self.qos.global_ = False
            log.warning("quorum queues consumed: per-consumer QoS, so ETA messages held "
                        "here count against the prefetch window")

    async def set_prefetch(self, count: int) -> None:
        self.qos.target = count
        await self.qos.apply()

    async def consume(self, spec: QueueSpec, handler: DeliveryHandler, passive: bool = False,
                      no_ack: bool = False, purpose: str | None = None) -> None:
        """Declare ``spec`` and start consuming it (manual acks unless ``no_ack``)."""
        queue = await self.declare(spec, passive=passive, purpose=purpose)
        name = spec.name

        async def on_message(message: DeliveredMessage) -> None:
            delivery = AmqpDelivery(message, name, self)
            if no_ack:
                delivery.settled = True  # acked by the broker on delivery
            await handler(delivery)

        if not isinstance(queue, RawQueue):
            raise TypeError("consuming needs a RawChannel (BackoffConnection's channels)")
        self._queues[spec.name] = queue
        self._consumers[spec.name] = await queue.consume(on_message, no_ack=no_ack)
        log.info("consuming", queue=spec.name, exchange=spec.exchange.name,
                 routing_key=spec.routing_key, arguments=spec.arguments)

    async def cancel_consumer(self, queue: str) -> bool:
        """Stop consuming ``queue``; its delivered messages stay unacked until settled."""
        tag = self._consumers.pop(queue, None)
        if tag is None:
            return False
        await self._queues[queue].cancel(tag)
        log.info("stopped consuming", queue=queue)
        return True

    async def change_prefetch(self, delta: int) -> None:
        await self.qos.adjust(delta)

    async def cancel_consumers(self) -> None:
        """Stop receiving new messages; delivered ones stay unacked until settled."""
        if not self.is_connected():
            # The broker dropped the consumers with the link, and took back every
            # unacked message; waiting for a reconnect to cancel them would hold
            # up a shutdown for as long as the outage lasts.
            self._consumers.clear()
            return
        for name, tag in list(self._consumers.items()):
            try:
                await self._queues[name].cancel(tag)
            except Exception as exc:  # the channel may already be gone
                log.warning("cancel consumer failed", queue=name, error=repr(exc))
        self._consumers.clear()

    async def ensure_declared(self, spec: QueueSpec | None, passive: bool) -> None:
        """Declare a routing target once per connection, as Celery's producer does.

        Concurrent publishes to a queue not yet declared share one declaration
        (a burst of them would otherwise each send their own).
        """
        if spec is None or spec.name in self._declared:
            return
        pending = self._declaring.get(spec.name)
        if pending is None:
            pending = self._declaring[spec.name] = asyncio.ensure_future(
                self.declare(spec, passive=passive, publish=True))
            pending.add_done_callback(lambda _: self._declaring.pop(spec.name, None))
        await asyncio.shield(pending)
        self._declared.add(spec.name)

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        """Publish a task message and wait for the broker's confirm."""
        await self._publish(exchange, routing_key, message.body, properties(message))

    async def publish_copy(self, exchange: str, routing_key: str, template: MessageTemplate,
                           task_id: str) -> None:
        """Publish ``template`` as ``task_id``, its properties encoded once for all copies."""
        spliced = task_id.encode()
        if len(spliced) != len(template.placeholder):  # the lengths in the bytes would change
            await self.publish(exchange, routing_key, template.fill(task_id))
            return
        await self._publish(exchange, routing_key, template.message.body,
                            SplicedProperties(template, spliced))

    def encode_template(self, template: MessageTemplate) -> None:
        template_pieces(template)

    async def _publish(self, exchange: str, routing_key: str, body: bytes,
                       props: spec.Basic.Properties) -> None:
        # Straight to the channel under aio-pika: its Message and Exchange wrappers
        # were a sixth of the CPU of a burst of publishes. Mandatory, as aio-pika
        # publishes: an unroutable message comes back as a return, not an error
        # (Celery's is dropped silently).
        channel = await self._channel(publish=True)
        underlay = await channel.get_underlay_channel()
        await underlay.basic_publish(body, exchange=exchange, routing_key=routing_key,
                                     properties=props, mandatory=True)

    # -- transient messages (monitoring events) ----------------------------------
    async def publish_transient(self, exchange: ExchangeSpec, routing_key: str,
                                message: OutgoingMessage) -> None:
        """Publish on the ``events`` channel: no publisher confirms, delivery mode 1.

        A channel of its own, so that events never wait behind task publishes'
        confirms and an events error cannot close the task channels.
        """
        channel = await self._channel(publish=False, purpose="events")
        declared = f"exchange:{exchange.name}"  # forgotten on reconnect, like queues
        if declared not in self._declared:
            await self._exchange(channel, exchange, passive=False)
            self._declared.add(declared)
        underlay = await channel.get_underlay_channel()
        await underlay.basic_publish(
            message.body, exchange=exchange.name, routing_key=routing_key,
            properties=spec.Basic.Properties(
                content_type=message.content_type, content_encoding=message.content_encoding,
                headers=message.headers, delivery_mode=TRANSIENT, priority=0))

    async def get(self, queue: str) -> Delivery | None:
        channel = await self._channel(publish=False, purpose="inspect")
        await channel.declare_queue(queue, passive=True)
        underlay = await channel.get_underlay_channel()
        message = await underlay.basic_get(queue, no_ack=False)
        if isinstance(message.delivery, spec.Basic.GetEmpty):
            return None
        return AmqpDelivery(message, queue)

    async def message_count(self, queue: str) -> int:
        channel = await self._channel(publish=False, purpose="inspect")
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0

    # -- monitoring ---------------------------------------------------------------
    def is_connected(self) -> bool:
        """Connected, and the consuming channel (if opened) is open: false while
        aio-pika reconnects, and after ``close``."""
        connection = self.connection
        if connection is None or connection.is_closed or not connection.connected.is_set():
            return False
        channel = self._channels.get("consume")
        return channel is None or not channel.is_closed

    def prefetch_window(self) -> int | None:
        """The basic.qos prefetch in force (raised by one per held ETA message)."""
        return self.qos.applied
