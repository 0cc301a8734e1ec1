"""Dead letters: rejected messages are kept, with why, and can be replayed.

A queue declared with ``x-dead-letter-exchange`` gets a plain reject and
RabbitMQ moves the message (with its ``x-death`` header). Any other queue
keeps its Celery-identical declaration; asyncworker publishes a copy to
``<queue><task_dead_letter_suffix>`` itself, with ``x-asyncworker-*`` headers
(reason, exception, worker, time, where it came from), and acks the original
only once the copy is confirmed.

A copy must always be publishable, whatever the original carried: its body
bytes are kept as they are, and :func:`sanitize_headers` makes every header
encodable (bytes that are not UTF-8 are kept as a byte array, numbers beyond
AMQP's range and values with no AMQP type become text, tables nested too
deep are cut), naming each change in ``x-asyncworker-sanitized``. If even
that copy is refused, a minimal one (body, reason and origin) is tried; if
that fails too, the original is requeued and logged, never dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .broker.base import Broker, Delivery
from .broker.frames import UNDECODABLE
from .broker.topology import ExchangeSpec, QueueSpec, Topology
from .logging import get_logger
from .protocol import peek_task_id
from .settings import Settings

log = get_logger("deadletter")

PREFIX = "x-asyncworker-"
REASON = PREFIX + "reason"
EXCEPTION = PREFIX + "exception"
WORKER = PREFIX + "worker"
TIME = PREFIX + "time"
ORIGIN_EXCHANGE = PREFIX + "original-exchange"
ORIGIN_ROUTING_KEY = PREFIX + "original-routing-key"
ORIGIN_QUEUE = PREFIX + "original-queue"
#: What :func:`sanitize_headers` changed, one ``"<path>: <what>"`` line each.
SANITIZED = PREFIX + "sanitized"

#: Tables and arrays nested deeper than this are kept as text.
MAX_DEPTH = 32
_INT64 = (-(2**63), 2**63 - 1)
_TEXT_LIMIT = 1024


def sanitize_headers(headers: dict[Any, Any]) -> tuple[dict[str, Any], list[str]]:
    """``headers`` made encodable by ``frames.encode_table``, and what was changed.

    Text, numbers, booleans, None, times, byte arrays, tables and arrays are
    kept (floats travel as doubles; NaN and infinities, which RabbitMQ
    refuses, become text). Bytes that are not
    UTF-8 and text that cannot be encoded (lone surrogates) are kept as byte
    arrays; integers beyond 64 bits, decimals AMQP cannot hold, values of
    other types and anything nested deeper than ``MAX_DEPTH`` become their
    ``repr`` (cut to 1 KiB); keys become text.
    """
    notes: list[str] = []
    table = _sanitize_table(headers, "", 0, notes)
    return table, notes


def _sanitize_table(table: dict[Any, Any], path: str, depth: int,
                    notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = key if isinstance(key, str) and _utf8(key) else repr(key)
        if name is not key:
            notes.append(f"{path}{name}: key kept as its repr")
        out[name] = _sanitize(value, f"{path}{name}", depth + 1, notes)
    return out


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_text(value: Any, path: str, why: str, notes: list[str]) -> str:
    notes.append(f"{path}: {why}; kept as text")
    text = repr(value)
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT - 3] + "..."


def _sanitize(value: Any, path: str, depth: int, notes: list[str]) -> Any:
    if value is None or isinstance(value, (bool, datetime, bytearray)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _as_text(
            value, path, "not a finite number (RabbitMQ refuses it)", notes)
    if isinstance(value, str):
        if _utf8(value):
            return value
        notes.append(f"{path}: text not encodable as UTF-8; kept as bytes")
        return bytearray(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return value
        return _as_text(value, path, "integer beyond 64 bits", notes)
    if isinstance(value, (bytes, memoryview)):
        notes.append(f"{path}: not UTF-8; kept as bytes")
        return bytearray(value)
    if isinstance(value, Decimal):
        # AMQP decimals: a 32-bit integer and a scale of at most 255 digits.
        exponent = value.as_tuple().exponent
        if (value.is_finite() and isinstance(exponent, int) and -255 <= exponent <= 0
                and abs(int(value.scaleb(-exponent))) < 2**31):
            return value
        return _as_text(value, path, "decimal beyond AMQP's range", notes)
    if isinstance(value, (dict, list, tuple)):
        if depth > MAX_DEPTH:
            return _as_text(value, path, f"nested deeper than {MAX_DEPTH}", notes)
        if isinstance(value, dict):
            return _sanitize_table(value, f"{path}.", depth, notes)
        return [_sanitize(v, f"{path}[{i}]", depth + 1, notes) for i, v in enumerate(value)]
    return _as_text(value, path, f"type {type(value).__name__} has no AMQP type", notes)


def dlq_spec(queue: str, suffix: str, queue_type: str = "classic") -> QueueSpec:
    """The dead-letter queue of ``queue``: durable, on the default exchange, of the
    same type as ``queue`` (``Topology.queue_type``)."""
    name = queue + suffix
    arguments = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
    return QueueSpec(name, ExchangeSpec(""), name, arguments=arguments)


class DeadLetters:
    """Rejects without requeue, keeping the message in a dead-letter queue."""

    def __init__(self, broker: Broker, topology: Topology, settings: Settings) -> None:
        self.broker = broker
        self.topology = topology
        self.settings = settings

    def _broker_dead_letters(self, queue: str) -> bool:
        spec = self.topology.queues.get(queue)
        return spec is not None and "x-dead-letter-exchange" in spec.arguments

    async def reject(self, delivery: Delivery, reason: str,
                     exc: BaseException | None = None) -> bool:
        """Reject ``delivery`` for good; True when it is kept somewhere.

        The original is acked only once its copy is confirmed; when no copy
        can be published it is requeued (logged), never dropped.
        """
        if not self.settings.task_dead_letter or self._broker_dead_letters(delivery.queue):
            await delivery.reject(requeue=False)
            return self._broker_dead_letters(delivery.queue)
        try:
            await self.copy(delivery, reason, exc)
        except Exception as err:
            log.error("could not publish dead letter; message requeued",
                      task_id=_task_id(delivery), reason=reason, error=repr(err))
            await delivery.requeue()
            return False
        await delivery.ack()
        return True

    async def copy(self, delivery: Delivery, reason: str,
                   exc: BaseException | None = None) -> None:
        """Publish a copy of ``delivery`` to the dead-letter queue of its queue.

        The full copy (every header, sanitized) first; if the broker refuses
        it, a minimal one: the body, our headers and the task id. Raises when
        neither is confirmed.
        """
        spec = dlq_spec(delivery.queue, self.settings.task_dead_letter_suffix,
                        self.topology.queue_type(delivery.queue))
        await self.broker.ensure_declared(spec, passive=False)
        ours = {
            REASON: reason,
            EXCEPTION: f"{type(exc).__name__}: {exc}" if exc is not None else None,
            WORKER: self.settings.worker_nodename,
            TIME: datetime.now(UTC).isoformat(),
            ORIGIN_EXCHANGE: delivery.exchange,
            ORIGIN_ROUTING_KEY: delivery.routing_key,
            ORIGIN_QUEUE: delivery.queue,
        }
        headers, notes = sanitize_headers({**delivery.headers, **ours})
        if notes:
            headers[SANITIZED] = notes[:100]
            log.warning("dead letter headers sanitized", task_id=_task_id(delivery),
                        changes=notes[:10])
        try:
            await self.broker.publish("", spec.name, delivery.outgoing(headers))
        except Exception as err:
            log.error("dead letter refused; publishing a minimal copy",
                      task_id=_task_id(delivery), error=repr(err))
            minimal, _ = sanitize_headers({**ours, "id": _task_id(delivery)})
            message = delivery.outgoing(minimal)
            message.content_type = _short_text(delivery.content_type) or "application/json"
            message.content_encoding = _short_text(delivery.content_encoding) or "utf-8"
            message.correlation_id = _short_text(delivery.correlation_id) or ""
            message.reply_to = None
            await self.broker.publish("", spec.name, message)
        log.warning("message dead-lettered", task_id=_task_id(delivery), queue=spec.name,
                    reason=reason)


def _task_id(delivery: Delivery) -> str | None:
    try:
        return peek_task_id(delivery.headers, delivery.correlation_id)
    except Exception:  # a hostile id header must not stop a dead letter
        return None


def _short_text(value: str | None) -> str | None:
    """A property fit for an AMQP short string (255 bytes of UTF-8), else None."""
    if not isinstance(value, str) or not _utf8(value) or len(value.encode()) > 255:
        return None
    return value


@dataclass(slots=True)
class DeadLetter:
    """One message in a dead-letter queue, as listed."""

    task_id: str | None
    task: str | None
    reason: str | None
    exception: str | None
    worker: str | None
    time: str | None
    exchange: str
    routing_key: str


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def describe(message: Delivery) -> DeadLetter:
    """Where a dead letter came from and why, by our headers or the broker's x-death."""
    headers: dict[str, Any] = dict(message.headers)
    death: dict[str, Any] = {}
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = dict(deaths[0])
    exchange = headers.get(ORIGIN_EXCHANGE)
    routing_key = headers.get(ORIGIN_ROUTING_KEY)
    if exchange is None:
        exchange = death.get("exchange", "")
        keys = death.get("routing-keys") or [death.get("queue", "")]
        routing_key = keys[0] if keys else ""
    return DeadLetter(
        task_id=peek_task_id(headers, message.correlation_id),
        task=_text(headers.get("task")),
        reason=_text(headers.get(REASON) or death.get("reason") or headers.get(UNDECODABLE)),
        exception=_text(headers.get(EXCEPTION)),
        worker=_text(headers.get(WORKER)),
        time=_text(headers.get(TIME) or death.get("time")),
        exchange=str(exchange or ""),
        routing_key=str(routing_key or ""),
    )


async def list_dead_letters(broker: Broker, dlq: str, limit: int) -> list[DeadLetter]:
    """Read up to ``limit`` dead letters without removing them."""
    seen: list[Delivery] = []
    try:
        while len(seen) < limit:
            message = await broker.get(dlq)
            if message is None:
                break
            seen.append(message)
        return [describe(m) for m in seen]
    finally:
        for message in seen:
            await message.requeue()


async def replay_dead_letters(broker: Broker, dlq: str, limit: int) -> int:
    """Publish up to ``limit`` dead letters back where they came from; returns the count.

    Only the messages present at the start are taken, so a message that fails
    again and comes back is not replayed in a loop.
    """
    present = await broker.message_count(dlq)
    replayed = 0
    while replayed < min(limit, present):
        message = await broker.get(dlq)
        if message is None:
            break
        info = describe(message)
        headers = {k: v for k, v in message.headers.items()
                   if not k.startswith(PREFIX) and k != "x-death"}
        await broker.publish(info.exchange, info.routing_key, message.outgoing(headers))
        await message.ack()
        replayed += 1
        log.info("dead letter replayed", task_id=info.task_id, exchange=info.exchange,
                 routing_key=info.routing_key)
    return replayed


def as_json(letters: list[DeadLetter]) -> str:
    """JSON lines for the command line."""
    return "\n".join(json.dumps({k: getattr(x, k) for k in DeadLetter.__slots__})
                     for x in letters)

