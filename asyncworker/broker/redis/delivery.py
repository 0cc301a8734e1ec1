"""A message taken from a Redis list, behind the ``Delivery`` interface.

Its properties are the kombu envelope's (``envelope.py``); settling goes
through the broker, which owns the ``unacked`` bookkeeping.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from redis import exceptions as redis_errors

from ..base import Delivery
from ..frames import UNDECODABLE
from . import envelope as envelopes

if TYPE_CHECKING:
    from .broker import RedisBroker

#: What a lost or unreachable Redis raises.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError, redis_errors.TimeoutError, OSError,
    redis_errors.BusyLoadingError)


class RedisDelivery(Delivery):
    """A message taken from a queue's list (recorded in ``unacked`` until settled)."""

    __slots__ = ("broker", "envelope", "stale", "tag")

    def __init__(self, broker: RedisBroker, queue: str, envelope: envelopes.Envelope) -> None:
        super().__init__(queue)
        self.broker = broker
        self.envelope = envelope
        self.tag = envelope.delivery_tag
        #: Set when another consumer restored it (we stalled past the timeout).
        self.stale = False

    body = property(lambda self: self.envelope.body)  # type: ignore[assignment]
    headers = property(lambda self: self.envelope.headers)  # type: ignore[assignment]
    content_type = property(  # type: ignore[assignment]
        lambda self: self.envelope.content_type)
    content_encoding = property(  # type: ignore[assignment]
        lambda self: self.envelope.content_encoding)
    correlation_id = property(  # type: ignore[assignment]
        lambda self: self.envelope.correlation_id)
    reply_to = property(lambda self: self.envelope.reply_to)  # type: ignore[assignment]
    priority = property(lambda self: self.envelope.priority)  # type: ignore[assignment]
    exchange = property(lambda self: self.envelope.exchange)  # type: ignore[assignment]
    routing_key = property(lambda self: self.envelope.routing_key)  # type: ignore[assignment]
    redelivered = property(lambda self: self.envelope.redelivered)  # type: ignore[assignment]

    @property
    def delivery_tag(self) -> str:
        """kombu's delivery tag (the key in ``unacked``), for logs."""
        return self.tag

    async def _settle(self, ack: bool, requeue: bool) -> bool:
        return await self.broker.settle(self, requeue=requeue and not ack)

    def is_stale(self) -> bool:
        return self.stale

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.broker.held()


def undecodable(raw: bytes, tag: str, queue: str, reason: str) -> envelopes.Envelope:
    # The whole item becomes the body, so its dead-letter copy keeps every byte.
    return envelopes.Envelope(
        raw=raw, payload={}, body=raw, headers={UNDECODABLE: f"malformed envelope: {reason}"},
        content_type="application/octet-stream", content_encoding="binary",
        correlation_id=None, reply_to=None, priority=None, delivery_tag=tag,
        exchange="", routing_key=queue, redelivered=False)
