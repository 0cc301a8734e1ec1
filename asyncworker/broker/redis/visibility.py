"""Visibility: messages left unacked by a dead consumer come back; ours do not.

kombu records each delivered message in ``unacked`` (the envelope) and
``unacked_index`` (a sorted set scored with the time of delivery). A message
whose score is older than ``visibility_timeout`` is taken to be abandoned and
is pushed back to its queue by whichever consumer sweeps first; the sweep
runs under kombu's mutex key (``unacked_mutex``), so asyncworker and Celery
workers sharing the database never restore one message twice, and each move
is a compare-and-restore (``scripts.RESTORE``): a message acked meanwhile is
not pushed back. Here the sweep runs every ``unacked_restore_interval``
seconds (2 by default; Celery's every 100 s), so a killed worker's tasks are
back within a few seconds of the timeout.

The trap kombu leaves open: a task whose ETA or countdown is further away
than ``visibility_timeout``, or that runs longer, stays unacked past the
timeout, gets restored, and runs twice. Here the consumer re-scores every
message it still holds (running, or waiting for its ETA) every quarter of
the timeout, so only a consumer that has stopped refreshing (dead, or
stalled for longer than the timeout) loses its messages to a restore. A
message found restored elsewhere is marked stale and not started here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import LockError

from ...logging import get_logger
from . import envelope as envelopes
from .delivery import CONNECTION_ERRORS

if TYPE_CHECKING:
    from .broker import RedisBroker

log = get_logger("broker")


class Visibility:
    """The keeper (re-scores what this consumer holds) and the restorer (sweeps)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._tasks: list[asyncio.Task[None]] = []
        #: Tags whose ack did not reach Redis (an outage): sent again by the keeper.
        self.unsent_acks: set[str] = set()
        self._nudge = asyncio.Event()

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._every(self.broker.options.refresh_interval,
                                                           self.keep)),
                           asyncio.create_task(self._every(self.broker.options.restore_interval,
                                                           self.sweep))]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def ack_later(self, tag: str) -> None:
        """Send this ack again at the next step (it is restored otherwise)."""
        self.unsent_acks.add(tag)
        self._nudge.set()

    def flush_soon(self) -> None:
        """Redis is back: refresh and resend acks now, not at the next tick."""
        self._nudge.set()

    async def _every(self, interval: float, step: Any) -> None:
        while True:
            try:
                await step()
            except CONNECTION_ERRORS:
                pass  # the fetch loop reports the outage and its end
            except Exception as exc:
                log.exception("visibility step failed", step=step.__name__, error=repr(exc))
            self._nudge.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), interval)

    async def keep(self) -> None:
        """Re-score every message still held here; mark those restored elsewhere."""
        keys = self.broker.keys
        held = list(self.broker.unsettled.values())
        unsent = list(self.unsent_acks)
        if not held and not unsent:
            return
        now = time.time()
        async with self.broker.redis().pipeline(transaction=False) as pipe:
            for delivery in held:
                pipe.zadd(keys.unacked_index, {delivery.tag: now}, xx=True, ch=True)
                pipe.hexists(keys.unacked, delivery.tag)
            for tag in unsent:
                pipe.zrem(keys.unacked_index, tag)
                pipe.hdel(keys.unacked, tag)
            replies = await pipe.execute()
        self.unsent_acks.difference_update(unsent)
        for i, delivery in enumerate(held):
            if not replies[2 * i + 1] and not delivery.settled and not delivery.stale:
                # Its slot is free again, and it is never settled from here: the
                # entry now in ``unacked`` under its tag is another delivery's.
                delivery.stale = True
                self.broker.forget(delivery)
                log.warning("message restored to its queue by another consumer (this one "
                            "stalled past visibility_timeout); it may run twice",
                            task_id=delivery.headers.get("id"), queue=delivery.queue)

    async def sweep(self) -> int:
        """Restore messages unacked past the visibility timeout; how many."""
        broker, keys, options = self.broker, self.broker.keys, self.broker.options
        client = broker.redis()
        ceiling = time.time() - options.visibility_timeout
        found = await client.zrangebyscore(keys.unacked_index, "-inf", ceiling, start=0,
                                           num=options.restore_limit)
        tags = [tag.decode() if isinstance(tag, bytes) else str(tag) for tag in found]
        due = [tag for tag in tags if tag not in broker.unsettled]  # ours are alive
        if not due:
            return 0
        lock = client.lock(keys.unacked_mutex, timeout=options.mutex_expire)
        if not await lock.acquire(blocking=False):
            return 0  # another consumer (ours or Celery's) is sweeping
        restored = 0
        try:
            for tag in due:
                restored += await self._restore(tag)
        finally:
            with contextlib.suppress(LockError, *CONNECTION_ERRORS):
                await lock.release()
        if restored:
            log.warning("restored messages unacked past visibility_timeout", count=restored,
                        visibility_timeout=options.visibility_timeout)
        return restored

    async def _restore(self, tag: str) -> int:
        broker, keys = self.broker, self.broker.keys
        client = broker.redis()
        value = await client.hget(keys.unacked, tag)
        if value is None:
            await client.zrem(keys.unacked_index, tag)  # acked meanwhile
            return 0
        try:
            message, exchange, routing_key = json.loads(value)
        except (ValueError, TypeError, UnicodeDecodeError):
            log.error("unreadable entry in unacked; left there", delivery_tag=tag)
            await client.zrem(keys.unacked_index, tag)
            return 0
        priority: int | None = None
        if isinstance(message, dict):
            queues = await broker.targets(str(exchange or ""), str(routing_key or ""))
            item = envelopes.redelivered_copy(json.dumps(message).encode())
            properties = message.get("properties")
            if isinstance(properties, dict):
                priority = envelopes.priority_of(properties.get("priority"))
        else:  # an item that was not an envelope: back to its queue unchanged
            queues = [str(routing_key)] if routing_key else []
            item = str(message).encode("utf-8", "surrogateescape")
        if not queues:
            log.error("unacked message has no queue to go back to; left in unacked",
                      delivery_tag=tag, exchange=exchange, routing_key=routing_key)
            return 0
        # Only if it is still the same entry: acked or restored meanwhile, nothing moves.
        return int(await broker.push_back(tag, value, queues, item, priority, head=True))
