"""Fanout exchanges over Redis PUB/SUB, as kombu's Redis transport does them.

kombu does not push a fanout message onto the bound queues' lists: it
PUBLISHes the envelope on ``<fanout_prefix><exchange>[/<routing key>]``, and
a consumer of a queue bound to that exchange PSUBSCRIBEs to the same name.
That is how ``celery inspect`` / ``control`` reach every worker's mailbox
(``celery.pidbox``). Messages published while nobody listens are lost, and
none is acked: the mailbox consumes without acks.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ...logging import get_logger
from ..base import DeliveryHandler
from ..topology import QueueSpec
from . import envelope as envelopes
from .delivery import CONNECTION_ERRORS, RedisDelivery

if TYPE_CHECKING:
    from .broker import RedisBroker

log = get_logger("broker")


class FanoutListener:
    """One PUB/SUB connection for every fanout queue consumed, restarted on change."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        #: queue -> (exchange, binding key, handler)
        self.queues: dict[str, tuple[str, str, DeliveryHandler]] = {}
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.subscribed = asyncio.Event()

    def topics(self) -> list[str]:
        keys = self.broker.keys
        return sorted({keys.topic(exchange, key) for exchange, key, _ in self.queues.values()})

    async def add(self, spec: QueueSpec, handler: DeliveryHandler) -> None:
        self.queues[spec.name] = (spec.exchange.name, spec.routing_key.replace("#", "*"),
                                  handler)
        await self._restart()

    async def remove(self, queue: str) -> bool:
        if self.queues.pop(queue, None) is None:
            return False
        await self._restart()
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _restart(self) -> None:
        await self.stop()
        if self.queues:
            self.subscribed.clear()
            self._task = asyncio.create_task(self._listen())
            # Subscribed before consume() returns: a broadcast sent right after
            # the worker says it is ready must reach it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.subscribed.wait(), 10)

    async def _listen(self) -> None:
        # One line when the subscription drops and one when it is back: the
        # attempts in between are the outage the fetch loop already reports.
        failures = 0
        while True:
            pubsub = self.broker.redis().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(*self.topics())
                self.subscribed.set()
                if failures:
                    log.info("fanout subscription restored", attempts=failures)
                failures = 0
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None:
                        self._dispatch(message)
            except CONNECTION_ERRORS as exc:
                if not failures:
                    log.warning("fanout subscription lost (remote control and broadcasts "
                                "sent meanwhile are missed); resubscribing", error=repr(exc))
                pause = self.broker.outage.policy.delay(failures)
                failures += 1
                await asyncio.sleep(pause)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, message: dict[str, Any]) -> None:
        keys = self.broker.keys
        channel = message.get("channel")
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        exchange = keys.exchange_of_channel(channel)
        for queue, (bound, _, handler) in self.queues.items():
            if bound != exchange:
                continue
            try:
                envelope = envelopes.decode(message.get("data") or b"")
            except envelopes.EnvelopeError as exc:
                log.warning("undecodable fanout message", exchange=exchange, error=str(exc))
                return
            delivery = RedisDelivery(self.broker, queue, envelope)
            delivery.settled = True  # nothing to ack: PUB/SUB
            task = asyncio.ensure_future(handler(delivery))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
