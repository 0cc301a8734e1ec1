"""Event settings, under Celery's names where Celery has one.

``worker_send_task_events`` (``-E``) and ``event_exchange`` are Celery's.
The others size the dispatcher's queue and batches, set the heartbeat
interval and what the worker calls itself in heartbeats, and optionally
let task events switched on by the ``enable_events`` command lapse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..settings import Section
from .dispatcher import EXCHANGE


@dataclass(slots=True)
class EventsSettings(Section):
    """The ``[events]`` section (its keys may also be written at the top level)."""

    section: ClassVar[str] = "events"

    #: Send task events from the start (``-E`` / ``--task-events``).
    worker_send_task_events: bool = False
    #: The exchange events are published to (topic, durable).
    event_exchange: str = EXCHANGE
    #: Seconds between ``worker-heartbeat`` events (Celery's default, 2.0).
    worker_heartbeat_interval: float = 2.0
    #: Events held while the broker is slow or down; beyond, new ones are dropped.
    worker_event_queue_size: int = 10000
    #: Task events sent together in one ``task.multi`` message at most.
    worker_event_batch_size: int = 100
    #: Task events turned on only by ``enable_events`` stop this many seconds after
    #: the last such command (Flower repeats it every 5 s). Unset: they stay on
    #: until ``disable_events``, as in Celery.
    worker_remote_events_timeout: float | None = None
    #: ``sw_ident`` in worker events: Celery's value, so tools see a Celery worker.
    worker_sw_ident: str = "py-celery"
