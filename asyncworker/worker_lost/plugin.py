"""Worker-lost detection as a built-in plugin: its settings, the admission gate,
the start marker, its release, and the lease service.

Per worker, with a result backend and ``worker_lost_detection`` on:

* ``steps.MarkStarted`` (execution middleware): before a late-ack task's body
  runs, its marker names this process as the owner, durably (one batched
  write);
* ``steps.ReleaseMarker`` (outcome step): once the task has an outcome, the
  marker is released, in the background, except before the message goes back
  to the broker (a requeue), where the release is awaited so the requeued
  copy is not taken for a death;
* ``steps.Lease`` (service): keeps this process's lease fresh and drops it on
  a clean stop;
* ``gate.WorkerLost`` (admission): judges redelivered late-ack messages.

Detection is durable and cheap: a redelivered flag alone proves nothing (a
dropped broker link redelivers too), and RabbitMQ's delivery count exists
only on quorum queues; a marker plus a lease works on every queue type and
costs one batched write per late-ack task started (and a release that nobody
waits for), plus one lease write per worker every few seconds.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..plugins import Plugin
from .liveness import Liveness, new_token
from .settings import WorkerLostSettings
from .store import LostStore, create

if TYPE_CHECKING:
    from ..services import Service
    from ..worker.job import Job
    from ..worker.middleware import Middleware
    from ..worker.outcomes import OutcomeStep
    from ..worker.worker import Worker
    from .gate import Runs
    from .steps import Marked

# The gate and steps import the worker package, which imports the App: they are
# imported when a worker is assembled, not with this module.


@dataclass(eq=False)
class _Parts:
    store: LostStore
    me: str
    runs: Runs
    marked: dict[Job, Marked]
    settings: WorkerLostSettings


class WorkerLostPlugin(Plugin):
    """Built in: acts only with a result backend and ``worker_lost_detection``."""

    name = "worker_lost"
    settings = WorkerLostSettings

    def __init__(self) -> None:
        self._parts: weakref.WeakKeyDictionary[Worker, _Parts | None] = (
            weakref.WeakKeyDictionary())

    def parts(self, worker: Worker) -> _Parts | None:
        """This worker's store, token and shared records (None: detection off)."""
        if worker in self._parts:
            return self._parts[worker]
        s = worker.settings.section(WorkerLostSettings)
        store = create(worker.settings.result_backend, worker.settings.result_batch_size) \
            if s.worker_lost_detection and worker.backend is not None else None
        if store is None:
            self._parts[worker] = None
            return None
        from .gate import Runs

        parts = _Parts(
            store, new_token(worker.settings.worker_nodename), Runs(), {}, s)
        self._parts[worker] = parts
        return parts

    def admission(self, worker: Worker) -> Iterable[Middleware]:
        from .gate import WorkerLost

        parts = self.parts(worker)
        if parts is None:
            return ()
        s = parts.settings
        liveness = Liveness(parts.store, parts.me, s.worker_lost_heartbeat, s.lease_ttl)
        return [WorkerLost(parts.store, liveness, parts.runs, worker.hooks, worker.executor,
                           s.worker_max_redeliveries)]

    def execution(self, worker: Worker) -> Iterable[Middleware]:
        parts = self.parts(worker)
        if parts is None:
            return ()
        from .steps import MarkStarted

        return [MarkStarted(parts.store, parts.me, parts.runs, parts.marked)]

    def outcome_steps(self, worker: Worker) -> Iterable[OutcomeStep]:
        parts = self.parts(worker)
        if parts is None:
            return ()
        from .steps import ReleaseMarker

        return [ReleaseMarker(parts.store, parts.runs, parts.marked)]

    def services(self, worker: Worker) -> Iterable[Service]:
        parts = self.parts(worker)
        if parts is None:
            return ()
        from .steps import Lease

        return [Lease(parts.store, parts.me, parts.settings)]
