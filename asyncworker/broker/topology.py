"""Queues, exchanges and routes derived from settings, as Celery derives them.

Declaring a queue that exists with other arguments closes the channel with 406
PRECONDITION_FAILED, so the declarations here mirror what Celery (kombu) sends
for the same settings, argument for argument.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ImproperlyConfigured
from ..settings import Settings


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """An exchange declaration (kombu defaults: durable, not auto-deleted)."""

    name: str
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue declaration and its binding."""

    name: str
    exchange: ExchangeSpec
    routing_key: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a task message goes: exchange name and routing key."""

    exchange: str
    routing_key: str
    queue: QueueSpec | None


_QUEUE_OPTIONS = {
    "exchange",
    "exchange_type",
    "routing_key",
    "binding_key",
    "queue_arguments",
    "max_priority",
    "durable",
    "exclusive",
    "auto_delete",
    "exchange_durable",
    "queue_type",
}


class Topology:
    """All queues the settings define, plus routing for producers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queues: dict[str, QueueSpec] = {}
        default_exchange = settings.task_default_exchange or settings.task_default_queue
        self.default_exchange = ExchangeSpec(default_exchange, settings.task_default_exchange_type)
        if settings.task_queues:
            for name, options in settings.task_queues.items():
                self.queues[name] = self._from_options(name, dict(options or {}))
        else:
            arguments = {}
            if settings.task_default_queue_type == "quorum":
                arguments["x-queue-type"] = "quorum"
            name = settings.task_default_queue
            self.queues[name] = self._with_priority(
                QueueSpec(
                    name,
                    self.default_exchange,
                    settings.task_default_routing_key or name,
                    arguments=arguments,
                )
            )
        self._routes = [
            (_compile(pattern), route) for pattern, route in settings.task_routes.items()
        ]

    def _with_priority(self, queue: QueueSpec) -> QueueSpec:
        max_priority = self.settings.task_queue_max_priority
        if max_priority is not None and "x-max-priority" not in queue.arguments:
            queue.arguments["x-max-priority"] = max_priority
        return queue

    def _from_options(self, name: str, options: dict[str, Any]) -> QueueSpec:
        unknown = set(options) - _QUEUE_OPTIONS
        if unknown:
            raise ImproperlyConfigured(f"task_queues.{name}: unknown options {sorted(unknown)}")
        exchange_name = options.get("exchange")
        if exchange_name is None:
            exchange = self.default_exchange
        else:
            exchange = ExchangeSpec(
                exchange_name,
                options.get("exchange_type", self.settings.task_default_exchange_type),
                durable=options.get("exchange_durable", True),
            )
        routing_key = options.get("routing_key") or options.get("binding_key")
        if routing_key is None:
            routing_key = self.settings.task_default_routing_key or name
        arguments = dict(options.get("queue_arguments") or {})
        if options.get("max_priority") is not None:
            arguments["x-max-priority"] = int(options["max_priority"])
        if options.get("queue_type") == "quorum":
            arguments["x-queue-type"] = "quorum"
        return self._with_priority(
            QueueSpec(
                name,
                exchange,
                routing_key,
                durable=options.get("durable", True),
                exclusive=options.get("exclusive", False),
                auto_delete=options.get("auto_delete", False),
                arguments=arguments,
            )
        )

    def queue(self, name: str) -> QueueSpec:
        """The queue called ``name``, created as Celery does when missing."""
        if name in self.queues:
            return self.queues[name]
        if not self.settings.task_create_missing_queues:
            raise ImproperlyConfigured(f"queue {name!r} is not defined in task_queues")
        arguments = {}
        if self.settings.task_default_queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        spec = self._with_priority(
            QueueSpec(name, ExchangeSpec(name, "direct"), name, arguments=arguments)
        )
        self.queues[name] = spec
        return spec

    def queue_type(self, name: str) -> str:
        """``quorum`` or ``classic``: the type of queue ``name`` (as declared here, else
        the default). The queues the worker derives from it (its dead letters, its
        delay buckets) take the same type, so that in a cluster they survive the
        loss of a node as it does."""
        spec = self.queues.get(name)
        if spec is None:
            return self.settings.task_default_queue_type
        return str(spec.arguments.get("x-queue-type", "classic"))

    def consume_from(self, names: list[str] | None) -> list[QueueSpec]:
        """The queues a worker consumes: ``-Q`` names, or every defined queue."""
        if names:
            return [self.queue(n) for n in names]
        if self.settings.task_queues:
            return list(self.queues.values())
        return [self.queue(self.settings.task_default_queue)]

    def route(
        self,
        task_name: str,
        queue: str | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> Route:
        """Resolve where ``task_name`` is published, as Celery's router does."""
        if queue is None and exchange is None and routing_key is None:
            for pattern, target in self._routes:
                if pattern.match(task_name):
                    if isinstance(target, str):
                        queue = target
                    else:
                        queue = target.get("queue")
                        exchange = target.get("exchange")
                        routing_key = target.get("routing_key")
                    break
        if queue is None and exchange is None and routing_key is None:
            queue = self.settings.task_default_queue
        spec = self.queue(queue) if queue else None
        if spec is not None:
            # Like Celery: a queue behind a direct exchange is published to through the
            # default exchange, keyed by the queue's name, unless both are given.
            if (not exchange or not routing_key) and spec.exchange.type == "direct":
                return Route("", spec.name, spec)
            exchange = spec.exchange.name if exchange is None else exchange
            routing_key = spec.routing_key if routing_key is None else routing_key
        return Route(exchange or "", routing_key or "", spec)


def _compile(pattern: str) -> re.Pattern[str]:
    # Celery accepts glob patterns and "re:" prefixed regular expressions.
    if pattern.startswith("re:"):
        return re.compile(pattern[3:])
    return re.compile(fnmatch.translate(pattern))
