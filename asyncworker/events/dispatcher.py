"""The event dispatcher: queue events from hooks, publish them in batches, drop under load.

``send`` is synchronous and cheap: it stamps the fields every Celery event
carries (``type``, ``timestamp``, ``hostname``, ``utcoffset``, ``pid``,
``clock``) and appends the event to a bounded queue. A background task
publishes what has queued: worker events one message each (routing key
``worker.heartbeat`` ...), task events together as one JSON list under
``task.multi``, which is what Celery's own worker sends and what its event
receiver (so Flower) reads. A lone task event goes out alone under its own key.

Events are monitoring, not data: they go out without publisher confirms and
as transient messages. When the queue is full (the broker is slow or down)
a new event is dropped and counted in ``dropped``; so is a batch that could
not be published. A task never waits for an event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import time
from typing import Any

from ..broker.base import Broker
from ..broker.topology import ExchangeSpec
from ..logging import get_logger
from ..protocol import OutgoingMessage

log = get_logger("events")

#: Celery's event exchange: topic, durable.
EXCHANGE = "celeryev"
#: How long one batch may take to publish before it is counted as dropped.
PUBLISH_TIMEOUT = 5.0
#: Seconds to let events gather after the first one, so that they share a message.
LINGER = 0.01


def utcoffset() -> float:
    """Hours west of UTC now, as Celery's events carry it (its ``utcoffset()``)."""
    if time.localtime().tm_isdst:
        return time.altzone / 3600
    return time.timezone / 3600


def routing_key(event_type: str) -> str:
    """``task-succeeded`` → ``task.succeeded``."""
    return event_type.replace("-", ".")


class EventDispatcher:
    """Bounded queue of events plus the task that publishes them.

    ``capacity`` bounds the queue; ``batch_size`` bounds the task events in
    one message. ``start`` begins publishing, ``close`` publishes what is left
    (within ``timeout``) and stops.
    """

    def __init__(self, broker: Broker, hostname: str, *, exchange: str = EXCHANGE,
                 capacity: int = 10000, batch_size: int = 100) -> None:
        self.broker = broker
        self.hostname = hostname
        self.exchange = ExchangeSpec(exchange, "topic", durable=True)
        self.capacity = max(1, capacity)
        self.batch_size = max(1, batch_size)
        self.pid = os.getpid()
        #: Lamport clock: one tick per event sent.
        self.clock = 0
        #: Events dropped: the queue was full, or their publish failed.
        self.dropped = 0
        #: Events published (handed to the broker).
        self.published = 0
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._offset = utcoffset()
        self._headers = {"hostname": hostname}

    # -- producing (synchronous, from hooks) ----------------------------------
    def send(self, event_type: str, **fields: Any) -> None:
        """Queue one event; drop it (counted) when the queue is full."""
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            return
        self.clock += 1
        fields.update(type=event_type, timestamp=time.time(), hostname=self.hostname,
                      utcoffset=self._offset, pid=self.pid, clock=self.clock)
        self._queue.append(fields)
        if not self._wakeup.is_set():
            self._wakeup.set()

    @property
    def pending(self) -> int:
        """Events queued, not yet published."""
        return len(self._queue)

    # -- publishing ------------------------------------------------------------
    def start(self) -> None:
        """Start the publishing task (in the running loop)."""
        if self._task is None:
            self._offset = utcoffset()
            self._task = asyncio.create_task(self._run(), name="asyncworker-events")

    async def close(self, timeout: float = 2.0) -> None:
        """Publish what is queued (for up to ``timeout`` seconds), then stop."""
        self._closing = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.dropped += len(self._queue)
        self._queue.clear()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._closing and len(queue) < self.batch_size:
                # Let a batch gather: one message per batch is most of the cost.
                await asyncio.sleep(LINGER)
            await self._publish(self._next_batch())

    def _next_batch(self) -> list[dict[str, Any]]:
        """The next message's events, in order: a run of task events (up to
        ``batch_size``), or one worker event."""
        queue = self._queue
        batch = [queue.popleft()]
        if batch[0]["type"].startswith("task-"):
            while queue and len(batch) < self.batch_size and queue[0]["type"].startswith("task-"):
                batch.append(queue.popleft())
        return batch

    async def flush(self) -> None:
        """Publish everything queued now (failures are dropped, counted)."""
        while self._queue:
            await self._publish(self._next_batch())

    async def _publish(self, events: list[dict[str, Any]]) -> None:
        if len(events) == 1:
            body: Any = events[0]
            key = routing_key(events[0]["type"])
        else:
            body, key = events, "task.multi"
        message = OutgoingMessage(
            body=json.dumps(body, default=repr).encode(), headers=self._headers,
            content_type="application/json", content_encoding="utf-8", correlation_id="",
            reply_to=None, priority=None, expiration_ms=None)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self.broker.publish_transient(self.exchange, key, message)
        except asyncio.CancelledError:
            self.dropped += len(events)  # closing: it is not coming back
            raise
        except Exception as exc:
            self.dropped += len(events)
            log.warning("events not published; dropped", count=len(events), error=repr(exc),
                        dropped_total=self.dropped)
            return
        self.published += len(events)
