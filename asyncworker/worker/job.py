"""A ``Job``: one received message on its way from the broker to the ack.

The consumer makes one per delivery. Admission middleware read and gate it,
execution middleware run it, and it leaves with an ``Outcome`` that outcome
steps, the result store, the ack policy and the hooks all read. Monitoring
(inspect, events, metrics) sees the same objects through ``WorkerState``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..broker.base import Delivery
    from ..exceptions import Retry
    from ..protocol import TaskMessage
    from ..task import Request, Task

# Where a job is (WorkerState keeps it in the matching collection).
RECEIVED = "received"    # decoded, not yet admitted
SCHEDULED = "scheduled"  # held until its ETA
RESERVED = "reserved"    # waiting for a rate limit, a cap or a slot
ACTIVE = "active"        # running
DONE = "done"

# How a job ended.
SUCCESS = "success"
FAILURE = "failure"
RETRY = "retry"
REJECTED = "rejected"    # bad input, unknown task, Reject raised
IGNORED = "ignored"      # Ignore raised, or a redelivered duplicate
REVOKED = "revoked"      # revoked, expired or terminated (see ``reason``)
CANCELLED = "cancelled"  # interrupted by a cold shutdown, or its channel closed


@dataclass(slots=True)
class Outcome:
    """How a job ended, and what the worker did about it."""

    kind: str
    #: The return value (SUCCESS).
    value: Any = None
    #: The exception (FAILURE, RETRY's cause, REJECTED's Reject, ...).
    exc: BaseException | None = None
    traceback: str | None = None
    #: Why (REVOKED: "revoked", "expired" or "terminated"; REJECTED: the reason).
    reason: str = ""
    #: REJECTED: the message goes back to the queue.
    requeue: bool = False
    #: RETRY: what the task asked for.
    retry: Retry | None = None
    #: Whether its state reached the result backend (None: nothing to store).
    stored: bool | None = None
    #: Tasks published on its behalf (callbacks, the next chain step), Celery's
    #: ``[[id, parent], None]`` tuples, stored as the result's children.
    children: list[Any] | None = None


@dataclass(slots=True, eq=False)
class Job:
    """One delivery and everything known about it so far."""

    delivery: Delivery
    message: TaskMessage | None = None
    task: Task | None = None
    request: Request | None = None
    state: str = RECEIVED
    outcome: Outcome | None = None
    #: The asyncio task handling it (to terminate it, or wait for it).
    handler: asyncio.Task[Any] | None = None
    #: Wall-clock times (events and inspect report them) ...
    received: float = 0.0
    started: float | None = None
    #: ... and the monotonic start, for the runtime.
    _t0: float = 0.0
    #: The message was acked before the task ran (early ack).
    acked_early: bool = False
    #: A revoke with terminate=True cancelled it.
    terminated: bool = False
    #: Its closing hook has fired (exactly one does).
    closed: bool = False
    #: Time limits in force: (hard, soft) seconds.
    time_limits: tuple[float | None, float | None] = (None, None)

    @property
    def id(self) -> str | None:
        """The task id, when the message could be read."""
        if self.message is not None:
            return self.message.id
        headers = self.delivery.headers
        value = headers.get("id") if headers else None
        return str(value) if value else self.delivery.correlation_id

    @property
    def name(self) -> str | None:
        """The task name, when the message could be read."""
        return self.message.task if self.message is not None else None

    @property
    def queue(self) -> str:
        """The queue the message came from."""
        return self.delivery.queue

    def mark_started(self) -> None:
        """Record the start time (the task body is about to run)."""
        self.started = time.time()
        self._t0 = time.monotonic()

    @property
    def runtime(self) -> float:
        """Seconds since the task started (0 when it never did)."""
        return time.monotonic() - self._t0 if self.started is not None else 0.0
