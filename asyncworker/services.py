"""Services: long-running parts of a worker beside task consumption.

A service is started after the app's lifespan hooks and before the first
task message is consumed, and stopped after the last task has finished, in
reverse order. ``order`` places it: the control mailbox first, then events
and heartbeats, metrics and health, then beat (so everything that reports on
the worker is up before anything that feeds it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .worker.worker import Worker

# Conventional places in the start order.
MAILBOX = 10
EVENTS = 20
METRICS = 30
BEAT = 40


class Service:
    """Base class: override ``start`` and ``stop``."""

    #: Used in logs.
    name: ClassVar[str] = "service"
    #: Lower starts earlier and stops later.
    order: ClassVar[int] = 50

    async def start(self, worker: Worker) -> None:
        """Start; the worker's broker, backend, state and hooks are ready."""

    async def stop(self) -> None:
        """Stop; called once, even when ``start`` failed."""
