"""The Redis broker: kombu's Redis transport, spoken with redis-py's asyncio client.

One fetch loop takes messages for every consumed queue while the prefetch
window has room: ``FETCH`` (``scripts.py``) pops the first message in
kombu's order (priority step, then queue in ``queue_order_strategy`` order)
and records it in ``unacked`` in the same step; when every list is empty, a
``BRPOP`` over the same lists waits for the next one (no polling). Acks
remove the message from ``unacked``; a requeue pushes it back to the head
of its queue; visibility (``visibility.py``) restores what a dead consumer
left and keeps what this one holds. Fanout exchanges (the control mailbox)
are PUB/SUB channels (``fanout.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.sentinel import Sentinel

from ...backoff import BackoffPolicy, Outage
from ...logging import get_logger
from ...protocol import OutgoingMessage
from .. import urls
from ..base import Broker, Delivery, DeliveryHandler
from ..topology import ExchangeSpec, QueueSpec
from . import envelope as envelopes
from . import keys as routing
from . import scripts
from .config import RedisOptions
from .delivery import CONNECTION_ERRORS, RedisDelivery, undecodable
from .fanout import FanoutListener
from .visibility import Visibility

log = get_logger("broker")

#: Binding tables of expiring queues live at least this long (kombu's floor).
MIN_BINDING_TTL_MS = 3600 * 1000
#: Seconds a blocking pop's reply may be late before the connection is taken as dead.
BRPOP_GRACE = 10.0
#: At most this many messages are taken per round trip (fewer when the
#: prefetch window has less room).
FETCH_BATCH = 16
#: Seconds a command may wait for a free connection of the pool.
POOL_WAIT = 30.0


class RedisBroker(Broker):
    """Queues as kombu's Redis lists; acks and visibility as kombu's ``unacked`` keys."""

    def __init__(self, options: RedisOptions, policy: BackoffPolicy | None = None) -> None:
        self.options = options
        self.keys = options.keys
        self.display_url = urls.redact(options.url)
        self.outage = Outage("broker", self.display_url, policy, log)
        self.client: aioredis.Redis | None = None
        self.cycle = routing.QueueCycle(options.queue_order_strategy)
        #: exchange name -> type, from what this process declared (as kombu's state).
        self.exchange_types: dict[str, str] = {"": "direct"}
        self._declared: set[str] = set()
        self._handlers: dict[str, tuple[DeliveryHandler, bool]] = {}
        #: Delivered, not yet settled: tag -> delivery (kept alive by ``visibility``).
        self.unsettled: dict[str, RedisDelivery] = {}
        self.window = 0
        self._held = 0
        self._wake = asyncio.Event()
        self._fetcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._up = False
        #: An item a blocking pop returned that could not be recorded yet.
        self._popped: tuple[str, bytes] | None = None
        self.fanout = FanoutListener(self)
        self.visibility = Visibility(self)
        self._scripts: dict[str, Any] = {}
        self._acks: list[tuple[str, asyncio.Future[None]]] = []
        self._ack_sender: asyncio.Task[None] | None = None

    # -- connection ------------------------------------------------------------
    def node_url(self) -> str:
        return self.options.url

    def redis(self) -> aioredis.Redis:
        """The client (created on first use; redis-py connects lazily).

        Its pool waits for a free connection rather than failing: a burst of
        acks and publishes from hundreds of tasks must queue, not error.
        """
        if self.client is None and self.options.sentinels:
            # The sentinels name the master; redis-py reconnects to the new one
            # after a failover (a command on the old one fails: an outage here).
            manager = Sentinel(  # type: ignore[no-untyped-call]
                list(self.options.sentinels),
                min_other_sentinels=self.options.min_other_sentinels,
                sentinel_kwargs=self.options.sentinel_kwargs, **self.options.client)
            assert self.options.master_name is not None
            self.client = manager.master_for(self.options.master_name,
                                             redis_class=aioredis.Redis)
        if self.client is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.options.url, max_connections=self.options.max_connections,
                timeout=POOL_WAIT, **self.options.client)
            self.client = aioredis.Redis(connection_pool=pool)
        if not self._scripts:
            self._scripts = {name: self.client.register_script(text) for name, text in (
                ("fetch", scripts.FETCH), ("restore", scripts.RESTORE),
                ("bind", scripts.REFRESH_BINDING))}
        return self.client

    def script(self, name: str) -> Any:
        self.redis()
        return self._scripts[name]

    async def connect(self, retry: bool = True) -> None:
        """Reach Redis (PING), retrying with backoff unless ``retry`` is False."""
        while True:
            try:
                await self.redis().ping()
                break
            except CONNECTION_ERRORS as exc:
                if not retry:
                    raise
                await asyncio.sleep(self.outage.failed(exc))
        self.outage.recovered()
        self._up = True
        log.info("connected to broker", url=self.display_url)

    def lost(self, exc: BaseException) -> float:
        """Record a failed Redis call; the pause before the next attempt."""
        if self._up:
            self._up = False
            self.outage.lost(exc)
            return 0.0
        return self.outage.failed(exc)

    def regained(self) -> None:
        if not self._up:
            self._up = True
            if self.outage.recovered():
                self.reconnects += 1
                self.visibility.flush_soon()

    async def close(self) -> None:
        """Stop consuming, give back what was never settled, close the client."""
        await self.cancel_consumers()
        await self.fanout.stop()
        await self.visibility.stop()
        if self.unsettled and self.client is not None:
            # As kombu at channel close: to the head of their queues, to run next.
            for delivery in list(self.unsettled.values()):
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await self.restore(delivery, head=True)
        if self.client is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.client.aclose()
            self.client = None
            self._scripts = {}
        self._up = False

    def is_connected(self) -> bool:
        return self._up and self.client is not None

    # -- declarations ----------------------------------------------------------
    async def declare(self, spec: QueueSpec) -> None:
        """Record ``spec``'s binding in kombu's binding table (the queue itself is
        just its lists, created by the first push)."""
        exchange = spec.exchange
        self.exchange_types.setdefault(exchange.name, exchange.type)
        if not exchange.name:
            return
        pattern = routing.topic_pattern(spec.routing_key) if exchange.type == "topic" else ""
        key = spec.routing_key.replace("#", "*") if exchange.type == "fanout" else \
            spec.routing_key
        member = self.keys.member(key if exchange.type == "fanout" else spec.routing_key,
                                  pattern, spec.name)
        expires = spec.arguments.get("x-expires")
        client = self.redis()
        if isinstance(expires, int) and expires > 0:
            await self.script("bind")(
                keys=[self.keys.binding(exchange.name), self.keys.binding_deadlines],
                args=[member, exchange.name, max(expires * 2, MIN_BINDING_TTL_MS)],
                client=client)
        else:
            async with client.pipeline(transaction=False) as pipe:
                pipe.sadd(self.keys.binding(exchange.name), member)
                pipe.sadd(self.keys.binding_permanent(exchange.name), member)
                await pipe.execute()

    async def ensure_declared(self, spec: QueueSpec | None, passive: bool) -> None:
        if spec is None or spec.name in self._declared:
            return
        if not passive:
            await self.declare(spec)
        else:
            self.exchange_types.setdefault(spec.exchange.name, spec.exchange.type)
        self._declared.add(spec.name)

    # -- consuming -------------------------------------------------------------
    async def consume(self, spec: QueueSpec, handler: DeliveryHandler, passive: bool = False,
                      no_ack: bool = False, purpose: str | None = None) -> None:
        if passive and not await self._exists(spec.name):
            raise LookupError(f"queue {spec.name!r} does not exist")
        if self.client is None:
            await self.connect()
        await self.declare(spec)
        if spec.exchange.type == "fanout" and spec.exchange.name:
            # kombu consumes a queue bound to a fanout exchange by subscribing.
            await self.fanout.add(spec, handler)
        else:
            self._handlers[spec.name] = (handler, no_ack)
            self.cycle.add(spec.name)
            self.visibility.start()
            if self._fetcher is None or self._fetcher.done():
                self._stopping = False
                self._fetcher = asyncio.create_task(self._fetch_loop())
            self._wake.set()
        log.info("consuming", queue=spec.name, exchange=spec.exchange.name,
                 routing_key=spec.routing_key)

    async def _exists(self, queue: str) -> bool:
        lists = self.keys.lists(queue)
        return bool(await self.redis().exists(*lists))

    async def cancel_consumer(self, queue: str) -> bool:
        if self._handlers.pop(queue, None) is None:
            return await self.fanout.remove(queue)
        self.cycle.discard(queue)
        log.info("stopped consuming", queue=queue)
        return True

    async def cancel_consumers(self) -> None:
        """Stop taking task messages (the blocking pop in progress ends first, so
        a message it returns is not lost); the control mailbox keeps listening."""
        self._handlers.clear()
        self.cycle.items.clear()
        self._stopping = True
        self._wake.set()
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            await asyncio.wait([fetcher], timeout=self.options.polling_interval + 5)
            if not fetcher.done():
                fetcher.cancel()

    async def set_prefetch(self, count: int) -> None:
        self.window = count
        self._wake.set()

    async def change_prefetch(self, delta: int) -> None:
        if self.window:
            self.window = max(1, self.window + delta)
            self._wake.set()

    def prefetch_window(self) -> int | None:
        return (self.window + self._held) if self.window else 0

    def _room(self) -> bool:
        return not self.window or len(self.unsettled) < self.window + self._held

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """A held (ETA) message leaves its prefetch slot to ready ones; it stays
        unacked, and ``visibility`` keeps it from being restored meanwhile."""
        self._held += 1
        self._wake.set()
        try:
            yield
        finally:
            self._held -= 1

    async def _fetch_loop(self) -> None:
        while not self._stopping:
            if not self.cycle.items or not self._room():
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                got = await self._fetch(self.cycle.order())
                self.regained()
            except CONNECTION_ERRORS as exc:
                await asyncio.sleep(self.lost(exc))
                continue
            except redis_errors.ResponseError as exc:
                # A key of the wrong type (someone else's data under a queue's
                # name): logged, and retried later rather than spun on.
                log.error("could not take a message", error=repr(exc))
                await asyncio.sleep(self.options.polling_interval)
                continue
            for message in got:
                await self._deliver(*message)

    def _batch(self) -> int:
        """How many messages to take in one call: what the window has room for."""
        if not self.window:
            return FETCH_BATCH
        return max(1, min(FETCH_BATCH, self.window + self._held - len(self.unsettled)))

    async def _fetch(self, queues: list[str]) -> list[tuple[str, bytes, str]]:
        """The next messages (recorded in ``unacked``), waiting up to
        ``polling_interval`` for one when none is ready."""
        if self._popped is None:
            got = await self._record(queues, None, self._batch())
            if got or self._stopping:
                return got
            # Bounded: a half-open connection (Redis gone without a FIN) must not
            # hold the consumer forever; the reply is due within the BRPOP timeout.
            async with asyncio.timeout(self.options.polling_interval + BRPOP_GRACE):
                popped = await self.redis().brpop(self.keys.fetch_order(queues),
                                                  timeout=self.options.polling_interval)
            if popped is None:
                return []
            key, item = popped
            self._popped = (_text(key), item.encode() if isinstance(item, str) else item)
        # The pop and the record are two steps here: keep the item until recorded.
        got = await self._record(queues, self._popped)
        self._popped = None
        return got

    async def _record(self, queues: list[str], popped: tuple[str, bytes] | None,
                      count: int = 1) -> list[tuple[str, bytes, str]]:
        """Pop up to ``count`` messages of ``queues`` (or take ``popped``) and
        record them in ``unacked``, in one step."""
        if popped is None:
            order = self.keys.fetch_order(queues)
            names = [self.keys.queue_of(key) for key in order]
            args: list[Any] = [time.time(), str(uuid.uuid4()), "", "", count, *names]
        else:
            order = []
            args = [time.time(), str(uuid.uuid4()), popped[1], popped[0], 1,
                    self.keys.queue_of(popped[0])]
        reply = await self.script("fetch")(
            keys=[self.keys.unacked, self.keys.unacked_index, *order], args=args,
            client=self.redis())
        return [(self.keys.queue_of(_text(reply[i])), bytes(reply[i + 1]), _text(reply[i + 2]))
                for i in range(0, len(reply or ()), 3)]

    async def _deliver(self, queue: str, raw: bytes, tag: str) -> None:
        self.cycle.rotate(queue)
        try:
            envelope = envelopes.decode(raw, fallback_tag=tag)
            envelope.delivery_tag = tag
        except envelopes.EnvelopeError as exc:
            envelope = undecodable(raw, tag, queue, str(exc))
        delivery = RedisDelivery(self, queue, envelope)
        self.unsettled[tag] = delivery
        entry = self._handlers.get(queue)
        if entry is None:
            # Cancelled while it was being taken: back to the head of its queue.
            delivery.settled = True
            self.unsettled.pop(tag, None)
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.restore(delivery, head=True)
            return
        handler, no_ack = entry
        if no_ack:
            await delivery.ack()
        try:
            await handler(delivery)
        except Exception as exc:  # the handler must not stop consumption
            log.exception("delivery handler failed", queue=queue, error=repr(exc))

    def forget(self, delivery: RedisDelivery) -> None:
        """No longer ours to settle (restored by another consumer)."""
        if self.unsettled.get(delivery.tag) is delivery:
            del self.unsettled[delivery.tag]
        self._wake.set()

    async def settle(self, delivery: RedisDelivery, requeue: bool) -> bool:
        """Ack (or drop) ``delivery``, or give it back to its queue when ``requeue``."""
        if delivery.stale:
            return False  # its tag now names the restored copy; leave that alone
        try:
            if requeue:
                # To the head, as AMQP puts a requeued message back where it was (kombu's
                # reject puts it at the tail): a message handed back at a warm shutdown
                # runs next, not after everything queued since.
                await self.restore(delivery, head=True)
            else:
                await self._ack(delivery.tag)
            return True
        except CONNECTION_ERRORS as exc:
            log.warning("could not settle message; it is restored after the visibility "
                        "timeout", action="requeue" if requeue else "ack", error=repr(exc),
                        task_id=delivery.headers.get("id"))
            if not requeue:
                self.visibility.ack_later(delivery.tag)
            return False
        finally:
            self.forget(delivery)

    async def _ack(self, tag: str) -> None:
        """Remove ``tag`` from ``unacked``: acks that come while a batch is being
        sent go together in the next one (one round trip for many tasks)."""
        done = asyncio.get_running_loop().create_future()
        self._acks.append((tag, done))
        if self._ack_sender is None or self._ack_sender.done():
            self._ack_sender = asyncio.create_task(self._send_acks())
        await done

    async def _send_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                async with self.redis().pipeline(transaction=False) as pipe:
                    for tag, _ in batch:
                        pipe.zrem(self.keys.unacked_index, tag)
                        pipe.hdel(self.keys.unacked, tag)
                    await pipe.execute()
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def restore(self, delivery: RedisDelivery, head: bool) -> bool:
        """Move ``delivery`` from ``unacked`` back to its queue, marked redelivered: to
        the head (next to be taken) or the tail. False when it was not unacked."""
        env = delivery.envelope
        if env.payload:
            targets = await self.targets(env.exchange, env.routing_key)
            item = envelopes.redelivered_copy(env.raw)
        else:  # not an envelope: back to the list it came from, unchanged
            targets, item = [delivery.queue], env.raw
        return await self.push_back(delivery.tag, "", targets, item, env.priority, head)

    async def push_back(self, tag: str, expected: str | bytes, queues: list[str],
                        item: bytes, priority: int | None, head: bool) -> bool:
        lists = [self.keys.list_key(queue, priority) for queue in queues]
        done = await self.script("restore")(
            keys=[self.keys.unacked, self.keys.unacked_index, *lists],
            args=[tag, expected, item, "R" if head else "L"], client=self.redis())
        return bool(done == 1)

    # -- publishing ------------------------------------------------------------
    async def targets(self, exchange: str, routing_key: str) -> list[str]:
        """The queues a message published to ``exchange`` with ``routing_key`` reaches
        (kombu's routing: the binding table of a direct or topic exchange)."""
        if not exchange:
            return [routing_key] if routing_key else []
        members = await self.redis().smembers(self.keys.binding(exchange))
        table = [parsed for parsed in map(self.keys.parse_member, members) if parsed]
        return routing.route(self.exchange_types.get(exchange, "direct"), table, routing_key)

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        await self._publish(exchange, routing_key, message, warn=True)

    async def publish_transient(self, exchange: ExchangeSpec, routing_key: str,
                                message: OutgoingMessage) -> None:
        """Events: over PUB/SUB, to whoever listens now.

        Celery makes its event exchange a fanout on Redis (``get_exchange`` in
        ``celery.events``), so event receivers (Flower, ``celery events``)
        subscribe to ``/<db>.celeryev/*`` rather than bind a list.
        """
        text, _ = envelopes.encode(message, exchange.name, routing_key)
        await self.redis().publish(self.keys.topic(exchange.name, routing_key), text)

    async def _publish(self, exchange: str, routing_key: str, message: OutgoingMessage,
                       warn: bool) -> None:
        text, _ = envelopes.encode(message, exchange, routing_key)
        client = self.redis()
        if self.exchange_types.get(exchange) == "fanout":
            await client.publish(self.keys.topic(exchange, routing_key), text)
            return
        queues = await self.targets(exchange, routing_key)
        if not queues:
            if warn:
                log.warning("message unroutable, dropped (as kombu drops it)",
                            exchange=exchange, routing_key=routing_key,
                            task_id=message.headers.get("id"))
            return
        if len(queues) == 1:
            await client.lpush(self.keys.list_key(queues[0], message.priority), text)
            return
        async with client.pipeline(transaction=True) as pipe:
            for queue in queues:
                pipe.lpush(self.keys.list_key(queue, message.priority), text)
            await pipe.execute()

    # -- inspection ------------------------------------------------------------
    async def get(self, queue: str) -> Delivery | None:
        got = await self._record([queue], None)
        if not got:
            return None
        _, raw, tag = got[0]
        try:
            envelope = envelopes.decode(raw, fallback_tag=tag)
            envelope.delivery_tag = tag
        except envelopes.EnvelopeError as exc:
            envelope = undecodable(raw, tag, queue, str(exc))
        return RedisDelivery(self, queue, envelope)

    async def message_count(self, queue: str) -> int:
        async with self.redis().pipeline(transaction=False) as pipe:
            for key in self.keys.lists(queue):
                pipe.llen(key)
            sizes = await pipe.execute()
        return sum(int(size) for size in sizes)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
