"""Celery's mailbox: the worker side of ``app.control`` / ``celery inspect``.

Declares ``celery.pidbox`` (fanout) and the node's queue
``<nodename>.celery.pidbox`` exactly as kombu does, consumes it without acks,
and answers the commands registered in ``handlers``. Replies go to the
``reply_to`` exchange and routing key a client gave, as ``{nodename: result}``
with its ``ticket`` and the worker's logical clock. It is a worker service
(started first, stopped last); the commands it answers are the app's
``control_commands`` (see ``commands.py``), each called as
``command(worker, **arguments)``.

Nothing a control message says can stop the mailbox: an unknown command is
answered ``{"error": "KeyError('name')"}`` as Celery answers it, a command
that raises is answered ``{"error": repr(exc)}``, and both are logged.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import time
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..broker.base import Broker, Delivery
from ..broker.topology import ExchangeSpec, QueueSpec
from ..logging import get_logger
from ..plugins import ControlCommand
from ..protocol import OutgoingMessage
from ..services import MAILBOX, Service
from .clock import LamportClock
from .policy import CommandRefused

if TYPE_CHECKING:
    from ..worker.worker import Worker

log = get_logger("pidbox")

PIDBOX_EXCHANGE = ExchangeSpec("celery.pidbox", "fanout", durable=False)
NO_REPLY = object()


def node_queue(nodename: str) -> QueueSpec:
    """The node's mailbox queue, with kombu's arguments (10 s expiry, 300 s TTL)."""
    return QueueSpec(f"{nodename}.celery.pidbox", PIDBOX_EXCHANGE, "", durable=False,
                     exclusive=True, auto_delete=True,
                     arguments={"x-expires": 10000, "x-message-ttl": 300000})


class Mailbox(Service):
    """Consumes the node's pidbox queue and dispatches commands."""

    name = "mailbox"
    order = MAILBOX

    def __init__(self) -> None:
        self.broker: Broker | None = None
        self.nodename = ""
        self.handlers: dict[str, ControlCommand] = {}
        self.clock = LamportClock()
        self.accept = serialization.accepted(["json"])

    async def start(self, worker: Worker) -> None:
        """Answer the app's control commands for ``worker``."""
        self.broker = worker.broker
        self.nodename = worker.settings.worker_nodename
        self.clock = worker.state.clock
        self.handlers = {name: functools.partial(command, worker)
                         for name, command in worker.app.control_commands.items()}
        await self.listen()

    async def listen(self) -> bool:
        """Declare and consume the mailbox queue; False (logged) when that fails."""
        assert self.broker is not None
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

    async def dispatch(self, method: str, arguments: Any) -> Any:
        """Run one command; its reply, or ``{"error": ...}`` (never raises)."""
        handler = self.handlers.get(method)
        if handler is None:
            log.warning("no such control command", method=method)
            return {"error": repr(KeyError(method))}  # Celery's reply, word for word
        if not isinstance(arguments, dict):
            arguments = {}
        try:
            return await handler(**arguments)
        except CommandRefused as exc:
            log.warning("control command refused", method=method, reason=str(exc))
            return {"error": repr(exc)}
        except Exception as exc:
            log.warning("control command failed", method=method, error=repr(exc))
            return {"error": repr(exc)}

    async def on_message(self, message: Delivery) -> None:
        """Handle one control message; never raises."""
        assert self.broker is not None
        try:
            body = serialization.loads(message.body, message.content_type,
                                       message.content_encoding, self.accept)
        except Exception as exc:
            log.warning("undecodable control message", error=repr(exc))
            return
        if not isinstance(body, dict) or not self._for_us(body):
            return
        expires = message.headers.get("expires")
        if isinstance(expires, (int, float)) and expires and expires < time.time():
            return
        self.clock.adjust(message.headers.get("clock"))
        method = str(body.get("method"))
        result = await self.dispatch(method, body.get("arguments"))
        reply_to = body.get("reply_to")
        if result is NO_REPLY or not isinstance(reply_to, dict):
            return
        try:
            await self.broker.publish(
                str(reply_to.get("exchange") or ""), str(reply_to.get("routing_key") or ""),
                OutgoingMessage(
                    body=serialization.dumps({self.nodename: result}),
                    headers={"ticket": body.get("ticket"), "clock": self.clock.forward()},
                    content_type=serialization.JSON, content_encoding="utf-8",
                    correlation_id="", reply_to=None, priority=None, expiration_ms=None))
        except Exception as exc:
            log.warning("control reply failed", method=method, error=repr(exc))
