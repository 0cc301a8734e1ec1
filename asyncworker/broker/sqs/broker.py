"""Amazon SQS behind the ``Broker`` interface, with aiobotocore.

SQS has no push and no acks: a consumer long-polls ``ReceiveMessage``; a
received message is hidden for the queue's visibility timeout and comes back
unless it is deleted. So here:

- Each consumed queue has a poller that asks for at most ten messages and at
  most what the prefetch window has room for (a held ETA message widens the
  window by one, as on AMQP), waiting ``wait_time_seconds`` on the server and
  ``polling_interval`` after an empty answer.
- Ack deletes the message, in ``DeleteMessageBatch`` calls (``batch.py``);
  the worker acks only after the result is stored. Requeue makes it visible
  again at once (visibility 0). A reject without requeue deletes it, unless
  the queue has a redrive policy: then SQS dead-letters it itself.
- A message not settled before half its visibility timeout has passed is
  hidden again for another timeout (``ChangeMessageVisibilityBatch``), while
  it runs or waits for its ETA, so a long task is not handed to another
  worker; SQS caps this at 12 hours after receipt. A message whose extension
  failed and whose timeout has passed is *stale*: it may be running elsewhere.
- On a FIFO queue the messages of one group are handed to the worker one at
  a time, the next once the previous is settled, so they run in order.
- Endpoint errors are retried with backoff (``Outage``); the poller resumes.

SQS has no fanout: as with Celery, the control mailbox and monitoring events
are not available (``consume`` of the mailbox and ``publish_transient`` do
nothing, logged once). Message format, URLs and queue names are kombu's
(``envelope.py``, ``config.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from ...backoff import BackoffPolicy, Outage
from ...logging import get_logger
from ...protocol import OutgoingMessage
from ..base import Broker, Delivery, DeliveryHandler
from ..frames import UNDECODABLE
from ..topology import ExchangeSpec, QueueSpec
from . import envelope
from .batch import MAX_BATCH, Batcher
from .config import Credentials, SqsConfig

log = get_logger("broker")

#: SQS lets a message stay hidden for at most this long after it was received.
MAX_HIDDEN = 12 * 3600
NO_FANOUT = ("remote control and monitoring events are not available on SQS (no fanout, "
             "as with Celery); tasks, results, metrics and health work")


class SqsDelivery(Delivery):
    """One received SQS message."""

    __slots__ = ("body", "broker", "content_encoding", "content_type", "correlation_id",
                 "exchange", "group", "headers", "priority", "receipt", "received",
                 "redelivered", "reply_to", "routing_key", "source", "visible_until",
                 "windowed")

    def __init__(self, broker: SqsBroker, source: _Source, message: dict[str, Any]) -> None:
        super().__init__(source.queue)
        self.broker = broker
        self.source = source
        self.receipt: str = message["ReceiptHandle"]
        attributes = message.get("Attributes") or {}
        self.group: str | None = attributes.get("MessageGroupId")
        self.redelivered = int(attributes.get("ApproximateReceiveCount", "1")) > 1
        self.received = time.monotonic()
        self.visible_until = self.received + source.visibility
        #: Counted in the prefetch window (not for ``get``).
        self.windowed = False
        decoded = envelope.decode(message.get("Body") or "")
        self.body = decoded.body
        self.headers = decoded.headers
        if decoded.error is not None:
            # The consumer dead-letters a message whose headers hold this (frames.py).
            self.headers = {UNDECODABLE: decoded.error}
        self.content_type = decoded.content_type
        self.content_encoding = decoded.content_encoding
        self.correlation_id = decoded.correlation_id
        self.reply_to = decoded.reply_to
        self.priority = decoded.priority
        self.exchange = decoded.exchange
        self.routing_key = decoded.routing_key or source.queue

    async def _settle(self, ack: bool, requeue: bool) -> bool:
        return await self.broker._settle(self, ack, requeue)

    def is_stale(self) -> bool:
        """Its visibility timeout has passed: SQS may have handed it to another worker."""
        return time.monotonic() > self.visible_until

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.broker._held()


class _Source:
    """A queue this broker receives from: its URL, client, timeout, and poller."""

    def __init__(self, queue: str, sqs_name: str, url: str, client: Any,
                 visibility: int, redrive: bool) -> None:
        self.queue = queue
        self.sqs_name = sqs_name
        self.url = url
        self.client = client
        self.visibility = visibility
        self.redrive = redrive
        self.fifo = sqs_name.endswith(".fifo")
        self.handler: DeliveryHandler | None = None
        self.poller: asyncio.Task[None] | None = None
        #: A ReceiveMessage is under way (its answer must be waited for, not cancelled).
        self.receiving = False
        #: FIFO: per group, the messages received but not yet handed over.
        self.groups: dict[str, collections.deque[SqsDelivery]] = {}
        #: FIFO: groups with a message handed over and not yet settled.
        self.busy: set[str] = set()


class Window:
    """The prefetch window: messages received and not settled, at most ``limit``."""

    def __init__(self) -> None:
        self.limit = 0  # 0: no limit
        self.used = 0
        self._changed = asyncio.Event()

    def room(self) -> int | None:
        return None if not self.limit else self.limit - self.used

    async def reserve(self, most: int) -> int:
        """Take up to ``most`` slots (at least one), waiting for room."""
        while True:
            room = self.room()
            if room is None or room > 0:
                taken = most if room is None else min(most, room)
                self.used += taken
                return taken
            self._changed.clear()
            await self._changed.wait()

    def release(self, count: int) -> None:
        if count:
            self.used -= count
            self._changed.set()

    def resize(self, limit: int) -> None:
        self.limit = max(0, limit)
        self._changed.set()


class SqsBroker(Broker):
    """Queues on Amazon SQS (or an SQS-compatible endpoint)."""

    def __init__(self, config: SqsConfig, policy: BackoffPolicy | None = None) -> None:
        self.config = config
        self.display_url = config.display_url
        self.outage = Outage("broker", config.display_url, policy, log)
        self.window = Window()
        self._session = get_session()
        self._stack: contextlib.AsyncExitStack | None = None
        self._clients: dict[Credentials, Any] = {}
        self._client_lock = asyncio.Lock()
        self._urls: dict[str, str] = {}
        self._sources: dict[str, _Source] = {}
        #: Exchange (name, routing key) -> queue, from declarations (direct routing).
        self._bindings: dict[tuple[str, str], str] = {}
        self._inflight: dict[int, SqsDelivery] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._extender: asyncio.Task[None] | None = None
        self._told_no_fanout = False
        self.deletes = Batcher(self._delete_batch, "delete")
        self.visibility = Batcher(self._visibility_batch, "visibility change")

    # -- clients and queues -------------------------------------------------------
    async def _client(self, credentials: Credentials) -> Any:
        async with self._client_lock:
            client = self._clients.get(credentials)
            if client is None:
                if self._stack is None:
                    self._stack = contextlib.AsyncExitStack()
                c = self.config
                settings = {"connect_timeout": 5,
                            # A long poll answers after up to wait_time_seconds.
                            "read_timeout": c.wait_time_seconds + 20,
                            "retries": {"total_max_attempts": 1},
                            "max_pool_connections": 50, **c.client_config}
                client = await self._stack.enter_async_context(self._session.create_client(
                    "sqs", region_name=credentials.region, endpoint_url=c.endpoint_url,
                    use_ssl=c.use_ssl, aws_access_key_id=credentials.access_key_id,
                    aws_secret_access_key=credentials.secret_access_key,
                    config=AioConfig(**settings)))
                self._clients[credentials] = client
            return client

    async def _client_for(self, sqs_name: str) -> Any:
        predefined = self.config.predefined.get(sqs_name)
        return await self._client(predefined.credentials if predefined
                                  else self.config.credentials)

    async def _url(self, sqs_name: str, create: bool) -> str:
        """The URL of the SQS queue ``sqs_name``, created (as kombu creates it) if need be."""
        url = self._urls.get(sqs_name)
        if url is not None:
            return url
        predefined = self.config.predefined
        if predefined:
            if sqs_name not in predefined:
                raise LookupError(f"SQS queue {sqs_name!r} is not in predefined_queues")
            url = predefined[sqs_name].url
        else:
            client = await self._client_for(sqs_name)
            try:
                url = (await client.get_queue_url(QueueName=sqs_name))["QueueUrl"]
            except ClientError as exc:
                if not _not_found(exc):
                    raise
                if not create:
                    raise LookupError(f"SQS queue {sqs_name!r} does not exist") from None
                attributes = {"VisibilityTimeout": str(self.config.visibility_timeout)}
                if sqs_name.endswith(".fifo"):
                    attributes["FifoQueue"] = "true"
                attributes.update(self.config.creation_attributes)
                extra = {"tags": self.config.queue_tags} if self.config.queue_tags else {}
                url = (await client.create_queue(QueueName=sqs_name, Attributes=attributes,
                                                 **extra))["QueueUrl"]
                log.info("SQS queue created", queue=sqs_name)
        self._urls[sqs_name] = url
        return url

    def _queue_for(self, exchange: str, routing_key: str) -> str:
        """Where a publish goes: kombu's direct routing, by the bindings declared."""
        if exchange:
            return self._bindings.get((exchange, routing_key), routing_key)
        return routing_key

    # -- connection ------------------------------------------------------------------
    async def connect(self, retry: bool = True) -> None:
        """Check the endpoint answers, retrying with backoff unless ``retry`` is False."""
        while True:
            try:
                if not self.config.predefined:  # per-queue credentials may not list queues
                    client = await self._client(self.config.credentials)
                    await client.list_queues(QueueNamePrefix=self.config.sqs_name(""),
                                             MaxResults=1)
                break
            except Exception as exc:
                if not retry:
                    raise
                await asyncio.sleep(self.outage.failed(exc))
        self.outage.recovered()
        log.info("connected to broker", url=self.display_url)
        if self._extender is None:
            self._extender = asyncio.create_task(self._extend_loop(), name="sqs-visibility")

    async def close(self) -> None:
        """Stop polling, send pending deletes, give back what was never handed over."""
        await self.cancel_consumers()
        pollers = [s.poller for s in self._sources.values() if s.poller is not None]
        if pollers:
            # A receive under way ends within wait_time_seconds and gives its
            # messages back; cancelled, they would stay hidden a whole timeout.
            _, late = await asyncio.wait(pollers, timeout=self.config.wait_time_seconds + 5)
            for poller in late:
                poller.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
        self._sources.clear()
        await self.deletes.flush()
        await self.visibility.flush()
        if self._extender is not None:
            self._extender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._extender
            self._extender = None
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._clients.clear()

    def is_connected(self) -> bool:
        return not self.outage.down

    def prefetch_window(self) -> int | None:
        return self.window.limit

    # -- declare and publish ---------------------------------------------------------
    async def ensure_declared(self, spec: QueueSpec | None, passive: bool) -> None:
        if spec is None:
            return
        if spec.exchange.name:
            self._bindings[(spec.exchange.name, spec.routing_key)] = spec.name
        await self._url(self.config.sqs_name(spec.name), create=not passive)

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        await self._send(self._queue_for(exchange, routing_key), exchange, routing_key,
                         message, group=None)

    async def republish(self, delivery: Delivery) -> None:
        # Back to its FIFO group, not to kombu's "default" one.
        group = delivery.group if isinstance(delivery, SqsDelivery) else None
        await self._send(delivery.queue, delivery.exchange, delivery.routing_key,
                         delivery.outgoing(), group=group)

    async def _send(self, queue: str, exchange: str, routing_key: str,
                    message: OutgoingMessage, group: str | None) -> None:
        sqs_name = self.config.sqs_name(queue)
        url = await self._url(sqs_name, create=True)
        kwargs: dict[str, Any] = {
            "QueueUrl": url,
            "MessageBody": envelope.encode(message, exchange, routing_key, self.config.base64)}
        if queue.endswith(".fifo"):
            # As kombu: a group ("default" unless given), a fresh deduplication id.
            kwargs["MessageGroupId"] = group or "default"
            kwargs["MessageDeduplicationId"] = str(uuid.uuid4())
        client = await self._client_for(sqs_name)
        await client.send_message(**kwargs)

    async def publish_transient(self, exchange: ExchangeSpec, routing_key: str,
                                message: OutgoingMessage) -> None:
        """Monitoring events: SQS has no fanout to carry them; dropped."""
        self._no_fanout()

    def _no_fanout(self) -> None:
        if not self._told_no_fanout:
            self._told_no_fanout = True
            log.info(NO_FANOUT)

    # -- consume ------------------------------------------------------------------------
    async def consume(self, spec: QueueSpec, handler: DeliveryHandler, passive: bool = False,
                      no_ack: bool = False, purpose: str | None = None) -> None:
        if no_ack or purpose == "control" or spec.exchange.type == "fanout":
            self._no_fanout()  # the control mailbox: a fanout SQS does not have
            return
        known = self._sources.get(spec.name)
        if known is not None:  # consumed again after cancel_consumer
            known.handler = handler
            if known.poller is None or known.poller.done():
                known.poller = asyncio.create_task(self._poll(known))
            return
        if spec.exchange.name:
            self._bindings[(spec.exchange.name, spec.routing_key)] = spec.name
        sqs_name = self.config.sqs_name(spec.name)
        url = await self._url(sqs_name, create=not passive)
        client = await self._client_for(sqs_name)
        visibility, redrive = self.config.visibility_timeout, False
        try:
            attrs = (await client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]))
            attributes = attrs.get("Attributes") or {}
            visibility = int(attributes.get("VisibilityTimeout", visibility))
            redrive = "RedrivePolicy" in attributes
        except ClientError as exc:  # not allowed to read them: the configured timeout
            log.warning("could not read SQS queue attributes", queue=sqs_name,
                        error=repr(exc))
        source = _Source(spec.name, sqs_name, url, client, visibility, redrive)
        source.handler = handler
        self._sources[spec.name] = source
        source.poller = asyncio.create_task(self._poll(source), name=f"sqs-poll-{sqs_name}")
        log.info("consuming", queue=spec.name, sqs_queue=sqs_name, visibility_timeout=visibility,
                 fifo=source.fifo, wait_time_seconds=self.config.wait_time_seconds)

    async def cancel_consumers(self) -> None:
        for name in list(self._sources):
            await self.cancel_consumer(name)

    async def cancel_consumer(self, queue: str) -> bool:
        """Stop receiving from ``queue``; a receive under way gives its messages back."""
        source = self._sources.get(queue)
        if source is None or source.handler is None:
            return False
        source.handler = None
        if source.poller is not None and not source.receiving:
            source.poller.cancel()  # waiting for room in the window (or sleeping)
        # Held FIFO messages were never handed over: visible again now.
        pending = [d for group in source.groups.values() for d in group]
        source.groups.clear()
        await self._give_back(pending)
        log.info("stopped consuming", queue=queue)
        return True

    async def set_prefetch(self, count: int) -> None:
        self.window.resize(count)

    async def change_prefetch(self, delta: int) -> None:
        if self.window.limit:
            self.window.resize(max(1, self.window.limit + delta))

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[None]:
        # One more slot while an ETA message waits (unlimited stays unlimited).
        widened = bool(self.window.limit)
        if widened:
            self.window.resize(self.window.limit + 1)
        try:
            yield
        finally:
            if widened:
                self.window.resize(self.window.limit - 1)

    async def _poll(self, source: _Source) -> None:
        """Receive from ``source`` while it has a handler, within the window."""
        config = self.config
        while source.handler is not None:
            # A share of the window per queue, so one long poll cannot take it all.
            share = max(1, (self.window.limit or MAX_BATCH) // max(1, len(self._sources)))
            count = await self.window.reserve(min(MAX_BATCH, share))
            source.receiving = True
            try:
                response = await source.client.receive_message(
                    QueueUrl=source.url, MaxNumberOfMessages=count,
                    WaitTimeSeconds=config.wait_time_seconds,
                    MessageSystemAttributeNames=["All"])
            except asyncio.CancelledError:
                self.window.release(count)
                raise
            except Exception as exc:
                self.window.release(count)
                source.receiving = False
                await asyncio.sleep(self.outage.failed(exc))
                if isinstance(exc, ClientError) and _not_found(exc):
                    await self._relocate(source)
                continue
            if self.outage.down:
                self.outage.recovered()
                self.reconnects += 1
            source.receiving = False
            messages = response.get("Messages") or []
            self.window.release(count - len(messages))
            deliveries = [SqsDelivery(self, source, m) for m in messages]
            for delivery in deliveries:
                delivery.windowed = True
                self._inflight[id(delivery)] = delivery
            if source.handler is None:
                await self._give_back(deliveries)  # cancelled while it waited
                return
            for delivery in deliveries:
                self._hand_over(source, delivery)
            if not messages and config.polling_interval:
                await asyncio.sleep(config.polling_interval)

    async def _relocate(self, source: _Source) -> None:
        """The queue is gone (deleted; an emulator restarted): find or create it again."""
        self._urls.pop(source.sqs_name, None)
        with contextlib.suppress(Exception):  # still failing: the next receive says so
            source.url = await self._url(source.sqs_name, create=True)

    def _hand_over(self, source: _Source, delivery: SqsDelivery) -> None:
        """To the worker; on a FIFO queue only once its group's previous one is settled."""
        if source.fifo and delivery.group is not None:
            if delivery.group in source.busy:
                source.groups.setdefault(delivery.group, collections.deque()).append(delivery)
                return
            source.busy.add(delivery.group)
        handler = source.handler
        if handler is None:
            self._spawn(self._give_back([delivery]))
            return
        self._spawn(handler(delivery))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, delivery: SqsDelivery) -> None:
        if self._inflight.pop(id(delivery), None) is not None and delivery.windowed:
            self.window.release(1)

    async def _give_back(self, deliveries: list[SqsDelivery]) -> None:
        """Make received messages visible again (never handed over, or given up)."""
        for delivery in deliveries:
            delivery.settled = True
            self._forget(delivery)
        await asyncio.gather(*(self.visibility.submit(d.source.url, {
            "ReceiptHandle": d.receipt, "VisibilityTimeout": 0}) for d in deliveries))

    async def _settle(self, delivery: SqsDelivery, ack: bool, requeue: bool) -> bool:
        self._forget(delivery)
        source = delivery.source
        if source.fifo and delivery.group is not None and self._sources.get(
                source.queue) is source:
            later = source.groups.pop(delivery.group, None)
            source.busy.discard(delivery.group)
            if later and not ack and requeue:
                # Back in front of its group: the later ones must wait for it again.
                await self._give_back(list(later))
            elif later:
                next_one = later.popleft()
                if later:
                    source.groups[delivery.group] = later
                self._hand_over(source, next_one)
        url = source.url
        if ack or not (requeue or source.redrive):
            # Rejected for good is deleted too, as kombu does, unless SQS's own
            # redrive policy is to dead-letter it.
            return await self.deletes.submit(url, {"ReceiptHandle": delivery.receipt})
        return await self.visibility.submit(url, {"ReceiptHandle": delivery.receipt,
                                                  "VisibilityTimeout": 0})

    # -- visibility --------------------------------------------------------------------
    async def _extend_loop(self) -> None:
        """Hide again every message about to reappear while it is still ours."""
        while True:
            # Often enough for the shortest timeout consumed (a quarter of it).
            shortest = min((s.visibility for s in self._sources.values()), default=4)
            await asyncio.sleep(max(0.25, min(1.0, shortest / 4)))
            try:
                await self._extend_due(time.monotonic())
            except Exception as exc:  # never let the loop die
                log.warning("SQS visibility extension failed", error=repr(exc))

    async def _extend_due(self, now: float) -> None:
        due = [d for d in self._inflight.values()
               if d.visible_until - now < d.source.visibility / 2
               and now - d.received < MAX_HIDDEN]
        if not due:
            return

        async def extend(delivery: SqsDelivery) -> None:
            timeout = min(delivery.source.visibility,
                          int(MAX_HIDDEN - (now - delivery.received)))
            if await self.visibility.submit(delivery.source.url, {
                    "ReceiptHandle": delivery.receipt, "VisibilityTimeout": timeout}):
                delivery.visible_until = now + timeout
            elif delivery.visible_until > now:
                pass  # tried again next second while it is still hidden

        await asyncio.gather(*(extend(d) for d in due))

    async def _delete_batch(self, url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        client = self._client_of_url(url)
        result: dict[str, Any] = await client.delete_message_batch(QueueUrl=url, Entries=entries)
        return result

    async def _visibility_batch(self, url: str,
                                entries: list[dict[str, Any]]) -> dict[str, Any]:
        client = self._client_of_url(url)
        result: dict[str, Any] = await client.change_message_visibility_batch(
            QueueUrl=url, Entries=entries)
        return result

    def _client_of_url(self, url: str) -> Any:
        for source in self._sources.values():
            if source.url == url:
                return source.client
        for name, known in self._urls.items():
            if known == url:
                predefined = self.config.predefined.get(name)
                creds = predefined.credentials if predefined else self.config.credentials
                if creds in self._clients:
                    return self._clients[creds]
        return self._clients[self.config.credentials]

    # -- inspection ---------------------------------------------------------------------
    async def get(self, queue: str) -> Delivery | None:
        sqs_name = self.config.sqs_name(queue)
        url = await self._url(sqs_name, create=False)
        client = await self._client_for(sqs_name)
        # A second of long polling: a short poll samples only some SQS servers
        # and can answer "empty" while messages wait.
        response = await client.receive_message(QueueUrl=url, MaxNumberOfMessages=1,
                                                WaitTimeSeconds=1,
                                                MessageSystemAttributeNames=["All"])
        messages = response.get("Messages") or []
        if not messages:
            return None
        source = _Source(queue, sqs_name, url, client, self.config.visibility_timeout, False)
        return SqsDelivery(self, source, messages[0])

    async def message_count(self, queue: str) -> int:
        sqs_name = self.config.sqs_name(queue)
        url = await self._url(sqs_name, create=False)
        client = await self._client_for(sqs_name)
        attrs = await client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int((attrs.get("Attributes") or {}).get("ApproximateNumberOfMessages", 0))


def _not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return "NonExistentQueue" in code or "QueueDoesNotExist" in code
