"""Consume straight from aiormq, under aio-pika's robust channel.

aio-pika hands each delivery to a consumer as an ``IncomingMessage``: it
converts a dozen properties per message and starts an asyncio task to call
the callback, on top of the task aiormq already starts per delivery. The
worker reads a few properties once and starts its own handler task, so those
layers were pure cost on the hot path (about a tenth of a noop task's CPU).

``RawQueue`` consumes with aiormq's ``basic_consume``, passing aiormq's own
``DeliveredMessage`` to the callback, and records the consumer where aio-pika's
``RobustQueue`` records its own, so a reconnect restores it the same way (the
restore calls ``consume`` again with the same arguments). ``RawChannel``
makes every queue declared on it a ``RawQueue``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika import RobustChannel, RobustQueue
from aiormq.abc import DeliveredMessage

#: What a raw consumer is called with, once per delivery, in aiormq's task.
RawCallback = Callable[[DeliveredMessage], Awaitable[None]]


class RawQueue(RobustQueue):
    """A robust queue whose consumers get aiormq's messages, restored on reconnect."""

    async def consume(self, callback: Any, no_ack: bool = False, exclusive: bool = False,
                      arguments: Any = None, consumer_tag: Any = None, timeout: Any = None,
                      robust: bool = True) -> Any:
        channel = await self.channel.get_underlay_channel()
        result = await channel.basic_consume(
            queue=self.name, consumer_callback=callback, exclusive=exclusive, no_ack=no_ack,
            arguments=arguments, consumer_tag=consumer_tag, timeout=timeout)
        tag = result.consumer_tag
        if tag is None:
            raise RuntimeError("the broker gave no consumer tag")
        if robust:
            # RobustQueue.restore calls consume(consumer_tag=tag, **these) on reconnect.
            self._consumers[tag] = {"callback": callback, "no_ack": no_ack,
                                    "exclusive": exclusive, "arguments": arguments}
        return tag


class RawChannel(RobustChannel):
    """A robust channel whose queues are ``RawQueue``."""

    QUEUE_CLASS = RawQueue
