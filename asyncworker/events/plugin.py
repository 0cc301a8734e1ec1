"""Events as a built-in plugin: the ``[events]`` settings, the worker events
service, the task-event hooks and the ``enable_events`` / ``disable_events`` /
``heartbeat`` control commands.

Every App enables it. Task events start on with ``-E`` (the setting
``worker_send_task_events``) or when a client sends ``enable_events``
(Flower does every 5 s); ``disable_events`` turns them off whichever way
they were turned on. In Celery a remote ``enable_events`` holds until
``disable_events`` or a restart; ``worker_remote_events_timeout`` optionally
lets it lapse once no ``enable_events`` has come for that long, so that task
events stop when the monitor that asked for them has gone.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..hooks import WorkerHooks
from ..logging import get_logger
from ..monitoring import report_event_drops
from ..plugins import ControlCommand, Plugin
from .dispatcher import EventDispatcher
from .settings import EventsSettings
from .tasks import TaskEvents
from .worker import WorkerEvents

if TYPE_CHECKING:
    from ..services import Service
    from ..worker.worker import Worker

log = get_logger("events")


@dataclass(eq=False)
class WorkerEventParts:
    """One worker's dispatcher, task hooks and service, and who turned task events on."""

    dispatcher: EventDispatcher
    tasks: TaskEvents
    service: WorkerEvents
    #: Task events on by the settings (``-E``), not only by a remote command.
    by_setting: bool
    #: Seconds a remote ``enable_events`` holds (None: until ``disable_events``).
    remote_timeout: float | None
    #: Monotonic time the last remote ``enable_events`` lapses at.
    remote_until: float | None = None

    def enable(self) -> bool:
        """A remote ``enable_events``; True when task events were off."""
        was_on = self.tasks.enabled
        self.tasks.enabled = True
        if not self.by_setting and self.remote_timeout is not None:
            self.remote_until = time.monotonic() + self.remote_timeout
        return not was_on

    def disable(self) -> bool:
        """A remote ``disable_events``; True when task events were on."""
        was_on = self.tasks.enabled
        self.tasks.enabled = self.by_setting = False
        self.remote_until = None
        return was_on

    def lapse(self) -> None:
        """Turn remote task events off once their last ``enable_events`` is too old."""
        if self.remote_until is not None and time.monotonic() >= self.remote_until:
            self.remote_until = None
            self.tasks.enabled = False
            log.info("task events off: no enable_events for a while",
                     timeout=self.remote_timeout)


class EventsPlugin(Plugin):
    """Celery's monitoring events on the ``celeryev`` exchange."""

    name = "events"
    settings = EventsSettings

    def __init__(self) -> None:
        self._parts: weakref.WeakKeyDictionary[Worker, WorkerEventParts] = (
            weakref.WeakKeyDictionary())

    def parts(self, worker: Worker) -> WorkerEventParts:
        """``worker``'s event parts, made on first use."""
        found = self._parts.get(worker)
        if found is None:
            s = worker.settings.section(EventsSettings)
            dispatcher = EventDispatcher(
                worker.broker, worker.settings.worker_nodename, exchange=s.event_exchange,
                capacity=s.worker_event_queue_size, batch_size=s.worker_event_batch_size)
            service = WorkerEvents(dispatcher, worker.state, interval=s.worker_heartbeat_interval,
                                   sw_ident=s.worker_sw_ident)
            found = WorkerEventParts(dispatcher, TaskEvents(dispatcher, s.worker_send_task_events),
                                     service, s.worker_send_task_events,
                                     s.worker_remote_events_timeout)
            service.on_beat.append(found.lapse)
            report_event_drops(worker, lambda: dispatcher.dropped)
            self._parts[worker] = found
        return found

    def dispatcher(self, worker: Worker) -> EventDispatcher:
        """The dispatcher of ``worker`` (its ``dropped`` count, for metrics)."""
        return self.parts(worker).dispatcher

    def hooks(self, worker: Worker) -> Iterable[WorkerHooks]:
        return (self.parts(worker).tasks,)

    def services(self, worker: Worker) -> Iterable[Service]:
        return (self.parts(worker).service,)

    def control_commands(self) -> Mapping[str, ControlCommand]:
        return {"enable_events": self.enable_events, "disable_events": self.disable_events,
                "heartbeat": self.heartbeat}

    async def enable_events(self, worker: Worker, **_: Any) -> dict[str, str]:
        """Celery's ``enable_events``: send task events."""
        if self.parts(worker).enable():
            log.info("task events enabled by remote")
            return {"ok": "task events enabled"}
        return {"ok": "task events already enabled"}

    async def disable_events(self, worker: Worker, **_: Any) -> dict[str, str]:
        """Celery's ``disable_events``: stop sending task events."""
        if self.parts(worker).disable():
            log.info("task events disabled by remote")
            return {"ok": "task events disabled"}
        return {"ok": "task events already disabled"}

    async def heartbeat(self, worker: Worker, **_: Any) -> None:
        """Celery's ``heartbeat``: send a ``worker-heartbeat`` now (event receivers ask
        when they start, to learn the live workers at once). Celery replies nothing."""
        self.parts(worker).service.send("worker-heartbeat")
