"""Queue commands: ``add_consumer`` and ``cancel_consumer``.

``add_consumer`` declares the queue as Celery would (a queue the settings
define keeps its definition; another gets a direct exchange of its own name
unless told otherwise) and starts consuming it. ``cancel_consumer`` stops
taking new messages from a queue; tasks already received from it still run.
The reply comes once the broker has confirmed the change (Celery answers
first and acts later).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..broker.topology import ExchangeSpec, QueueSpec
from ..logging import get_logger
from ..plugins import ControlCommand
from .policy import require_destructive

if TYPE_CHECKING:
    from ..worker.worker import Worker

log = get_logger("control")


def queue_spec(worker: Worker, queue: str, exchange: str | None = None,
               exchange_type: str | None = None, routing_key: str | None = None,
               options: dict[str, Any] | None = None) -> QueueSpec:
    """The declaration ``add_consumer`` makes for these arguments."""
    topology = worker.app.topology
    options = options or {}
    if queue in topology.queues or not (exchange or exchange_type or routing_key or options):
        return topology.queue(queue)
    return QueueSpec(
        queue,
        ExchangeSpec(exchange or queue, exchange_type or "direct",
                     durable=bool(options.get("exchange_durable", True))),
        routing_key or queue,
        durable=bool(options.get("durable", True)),
        exclusive=bool(options.get("exclusive", False)),
        auto_delete=bool(options.get("auto_delete", False)),
        arguments=dict(options.get("queue_arguments") or {}),
    )


async def add_consumer(worker: Worker, queue: str = "", exchange: str | None = None,
                       exchange_type: str | None = None, routing_key: str | None = None,
                       **options: Any) -> dict[str, str]:
    """``celery control add_consumer QUEUE [EXCHANGE [TYPE [ROUTING_KEY]]]``."""
    require_destructive(worker, "add_consumer")
    if not queue:
        return {"error": "add_consumer needs a queue name"}
    spec = queue_spec(worker, queue, exchange, exchange_type, routing_key, options)
    if await worker.consumer.add_queue(spec):
        log.info("consuming from queue by remote request", queue=queue)
        return {"ok": f"add consumer {queue}"}
    return {"ok": f"already consuming from {queue}"}


async def cancel_consumer(worker: Worker, queue: str = "", **_: Any) -> dict[str, str]:
    """``celery control cancel_consumer QUEUE``."""
    require_destructive(worker, "cancel_consumer")
    if await worker.consumer.cancel_queue(queue):
        log.info("stopped consuming from queue by remote request", queue=queue)
    return {"ok": f"no longer consuming from {queue}"}


COMMANDS: dict[str, ControlCommand] = {
    "add_consumer": add_consumer, "cancel_consumer": cancel_consumer}
