"""Delay queues: park a far-future (ETA) message in RabbitMQ instead of holding it.

RabbitMQ closes a channel whose delivery stays unacked longer than
``consumer_timeout`` (30 minutes by default), and everything unacked on that
channel comes back. A worker that holds an ETA message for hours therefore
loses its channel; holding thousands of them also costs memory and prefetch.
So a message whose ETA is further away than ``worker_eta_hold_limit`` is
*parked*: a copy goes to a delay queue and the original is acked once the
broker has confirmed the copy.

Why power-of-two buckets. RabbitMQ expires messages only at the head of a
queue, so one wait queue with a TTL per message would keep an early message
behind a later one. Each bucket queue here has one fixed ``x-message-ttl``
(2^k seconds), so its messages expire in the order they came. A message goes
to the largest bucket that still brings it back at least half the hold limit
before its ETA; when it expires RabbitMQ dead-letters it (exchange ``""``,
routing key = the task's queue) straight back to the queue it came from,
headers and body as they were. A worker that receives it and finds the ETA
still beyond the hold limit parks it again in a smaller bucket; each hop at
least halves what is left (past the largest bucket, 48.5 days, it takes that
one again), so a message an hour out makes two hops, a day out three, a year
out twelve. The last return lands between half the hold limit and the hold
limit before the ETA, and the worker holds it in memory until the ETA, as
for any near ETA, so it runs on time.

Why not a table of scheduled tasks (PostgreSQL): the broker is the one
service every worker (and Celery worker) on the queue already shares, a
parked message survives worker restarts and broker restarts (durable queue,
persistent message) without a poller, and it comes back as the very message
a Celery worker would have received: a Celery worker on the same queue runs
it on time too.

The bucket queues are named ``asyncworker.delay.<seconds>s.<queue>``, a
prefix Celery never declares, one set per task queue, declared on first use.
While a message is parked no worker holds it: the ``task_parked`` hook lets
the ``parked`` plugin record it, so ``inspect scheduled`` still lists it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..logging import get_logger
from ..protocol import peek_task_id
from .base import Broker, Delivery
from .topology import ExchangeSpec, QueueSpec

log = get_logger("delay")

PREFIX = "asyncworker.delay."
#: 2^22 s (48.5 days): ``x-message-ttl`` must fit in 32 bits of milliseconds.
MAX_LEVEL = 22
#: AMQP short strings (queue names) are at most 255 bytes.
_NAME_LIMIT = 255
#: Headers RabbitMQ adds on dead-lettering; a parked copy drops them so that the
#: message a worker (or Celery) finally gets carries the producer's headers only.
_DEATH_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue",
                  "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
                  "x-last-death-reason")


def lead(hold_limit: float) -> float:
    """How long before its ETA a parked message comes back (at least): half the limit."""
    return hold_limit / 2


def should_park(delay: float, hold_limit: float | None) -> bool:
    """Whether a message due in ``delay`` seconds is parked rather than held."""
    return hold_limit is not None and delay > hold_limit and bucket_level(
        delay, hold_limit) is not None


def bucket_level(delay: float, hold_limit: float) -> int | None:
    """The bucket (2^k seconds) for a message due in ``delay`` seconds, or None.

    The largest power of two that still brings the message back at least
    ``lead(hold_limit)`` before its ETA; None when not even one second fits.
    """
    room = delay - lead(hold_limit)
    if room < 1:
        return None
    return min(int(room).bit_length() - 1, MAX_LEVEL)


def hops(delay: float, hold_limit: float) -> list[int]:
    """The buckets (seconds) a message due in ``delay`` seconds goes through.

    Assumes each hop takes exactly its TTL; the real path only differs by the
    time a worker takes to receive and re-park it.
    """
    path: list[int] = []
    while should_park(delay, hold_limit):
        level = bucket_level(delay, hold_limit)
        assert level is not None
        path.append(2 ** level)
        delay -= 2 ** level
    return path


def bucket_name(queue: str, seconds: int) -> str:
    """The delay queue of ``queue`` whose messages wait ``seconds``."""
    name = f"{PREFIX}{seconds}s.{queue}"
    if len(name.encode()) > _NAME_LIMIT:
        # Still one queue per (queue, bucket), and still readable at the start.
        digest = hashlib.sha256(queue.encode()).hexdigest()[:16]
        name = f"{PREFIX}{seconds}s.{queue.encode()[:200].decode(errors='ignore')}.{digest}"
    return name


def bucket_spec(queue: str, level: int, queue_type: str = "classic") -> QueueSpec:
    """The declaration of one bucket: a fixed TTL, dead-lettering back to ``queue``;
    a quorum queue when ``queue`` is one (RabbitMQ 3.10+ expires their messages)."""
    seconds = 2 ** level
    name = bucket_name(queue, seconds)
    arguments: dict[str, Any] = {
        "x-message-ttl": seconds * 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
    }
    if queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    return QueueSpec(name, ExchangeSpec(""), name, arguments=arguments)


def parked_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """The producer's headers, without what earlier dead-letterings added."""
    return {k: v for k, v in headers.items() if k not in _DEATH_HEADERS}


async def park(broker: Broker, delivery: Delivery, level: int,
               queue_type: str = "classic") -> bool:
    """Publish a copy of ``delivery`` to its bucket, then ack the original.

    Raises when the copy could not be published (the original stays
    unsettled). False when the copy is in but the ack was lost: the broker
    redelivers the original, so both come back (the dedupe step and the
    result store catch the second run only once the first has finished).
    """
    spec = bucket_spec(delivery.queue, level, queue_type)
    await broker.ensure_declared(spec, passive=False)
    await broker.publish("", spec.name, delivery.outgoing(parked_headers(delivery.headers)))
    acked = await delivery.ack()
    if not acked:
        log.warning("parked copy published but the original could not be acked; it "
                    "will come back too", task_id=peek_task_id(delivery.headers,
                                                                delivery.correlation_id))
    return acked
