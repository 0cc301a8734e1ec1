"""Celery's mailbox: the worker side of ``app.control`` / ``celery inspect``.

Declares ``celery.pidbox`` (fanout) and the node's queue
``<nodename>.celery.pidbox`` exactly as kombu does, consumes it without acks,
and answers the commands registered in ``handlers``. Replies go to the
``reply_to`` exchange and routing key a client gave, as ``{nodename: result}``
with its ``ticket``. Commands are plain async functions, so the inspect and
control commands of later work plug in by adding entries.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from .. import serialization
from ..broker.amqp import AmqpBroker
from ..broker.topology import ExchangeSpec, QueueSpec
from ..logging import get_logger
from ..protocol import OutgoingMessage

log = get_logger("pidbox")

Handler = Callable[..., Awaitable[Any]]

PIDBOX_EXCHANGE = ExchangeSpec("celery.pidbox", "fanout", durable=False)
NO_REPLY = object()


def node_queue(nodename: str) -> QueueSpec:
    """The node's mailbox queue, with kombu's arguments (10 s expiry, 300 s TTL)."""
    return QueueSpec(f"{nodename}.celery.pidbox", PIDBOX_EXCHANGE, "", durable=False,
                     exclusive=True, auto_delete=True,
                     arguments={"x-expires": 10000, "x-message-ttl": 300000})


class Mailbox:
    """Consumes the node's pidbox queue and dispatches commands."""

    def __init__(self, broker: AmqpBroker, nodename: str) -> None:
        self.broker = broker
        self.nodename = nodename
        self.handlers: dict[str, Handler] = {}
        self.clock = 0
        self.accept = serialization.accepted(["json"])

    def register(self, name: str, handler: Handler) -> None:
        """Answer the command ``name`` with ``handler(**arguments)``."""
        self.handlers[name] = handler

    async def start(self) -> bool:
        """Declare and consume the mailbox queue; False (logged) when that fails."""
        try:
            await self.broker.consume(node_queue(self.nodename), self.on_message,
                                      passive=False, no_ack=True, purpose="control")
        except Exception as exc:
            # Most often another worker runs under the same node name (the queue
            # is exclusive). Tasks still run; remote control does not reach us.
            log.error("remote control disabled: mailbox queue unavailable (is another "
                      "worker using this node name? pass -n)", nodename=self.nodename,
                      error=repr(exc))
            return False
        return True

    def _for_us(self, body: dict[str, Any]) -> bool:
        destination = body.get("destination")
        pattern = body.get("pattern")
        if pattern:
            matcher = body.get("matcher") or "glob"
            if matcher == "pcre":
                return re.search(pattern, self.nodename) is not None
            return fnmatch.fnmatch(self.nodename, pattern)
        return not destination or self.nodename in destination

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Handle one control message; never raises."""
        try:
            body = serialization.loads(message.body, message.content_type,
                                       message.content_encoding, self.accept)
        except Exception as exc:
            log.warning("undecodable control message", error=repr(exc))
            return
        if not isinstance(body, dict) or not self._for_us(body):
            return
        expires = (message.headers or {}).get("expires")
        if isinstance(expires, (int, float)) and expires and expires < time.time():
            return
        method = str(body.get("method"))
        handler = self.handlers.get(method)
        try:
            if handler is None:
                raise KeyError(f"No such control command: {method}")
            result = await handler(**(body.get("arguments") or {}))
        except Exception as exc:
            log.warning("control command failed", method=method, error=repr(exc))
            result = {"error": repr(exc)}
        reply_to = body.get("reply_to")
        if result is NO_REPLY or not isinstance(reply_to, dict):
            return
        self.clock += 1
        try:
            await self.broker.publish(
                str(reply_to.get("exchange") or ""), str(reply_to.get("routing_key") or ""),
                OutgoingMessage(
                    body=serialization.dumps({self.nodename: result}),
                    headers={"ticket": body.get("ticket"), "clock": self.clock},
                    content_type=serialization.JSON, content_encoding="utf-8",
                    correlation_id="", reply_to=None, priority=None, expiration_ms=None))
        except Exception as exc:
            log.warning("control reply failed", method=method, error=repr(exc))
