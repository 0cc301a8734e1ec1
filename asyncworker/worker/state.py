"""``WorkerState``: what this worker holds and has done, for inspect, events and health.

Jobs move ``received → scheduled (ETA) → reserved → active → done``; the
state keeps each in the matching collection and counts outcomes. It is also
a hook subscriber (the first one), so the counters follow the same closing
hooks every other observer sees.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

from ..control.clock import LamportClock
from ..control.revoked import RevokedSet
from ..hooks import WorkerHooks
from . import job as jobs

if TYPE_CHECKING:
    from .job import Job


class WorkerState(WorkerHooks):
    """Reserved, scheduled and active jobs, revoked ids and counters of one worker."""

    def __init__(self) -> None:
        self.started_at = time.time()
        #: Admitted but waiting for a rate limit, a cap or a slot.
        self.reserved: set[Job] = set()
        #: Held until their ETA.
        self.scheduled: set[Job] = set()
        #: Running, by task id (a redelivered copy waits for its first run).
        self.active: dict[str, Job] = {}
        self.revoked = RevokedSet()
        #: Stamped-header values whose tasks are revoked (``revoke_by_stamped_headers``).
        self.revoked_stamps: dict[str, list[object]] = {}
        #: The logical clock control replies (and events) carry.
        self.clock = LamportClock()
        #: Tasks that finished, by name (Celery's ``stats()['total']``).
        self.total: collections.Counter[str] = collections.Counter()
        #: Events by kind: received, succeeded, failed, retried, rejected, ...
        self.counts: collections.Counter[str] = collections.Counter()

    # -- transitions (called by the consumer and admission middleware) -----
    def move(self, job: Job, to: str) -> None:
        """Put ``job`` in the collection for ``to`` (leaving the one it was in)."""
        self._leave(job)
        job.state = to
        if to == jobs.SCHEDULED:
            self.scheduled.add(job)
        elif to == jobs.RESERVED:
            self.reserved.add(job)
        elif to == jobs.ACTIVE and job.message is not None:
            self.active[job.message.id] = job

    def _leave(self, job: Job) -> None:
        state = job.state
        if state == jobs.RESERVED:
            self.reserved.discard(job)
        elif state == jobs.SCHEDULED:
            self.scheduled.discard(job)
        elif (state == jobs.ACTIVE and job.message is not None
              and self.active.get(job.message.id) is job):
            del self.active[job.message.id]

    def done(self, job: Job) -> None:
        """The job has left the worker."""
        self._leave(job)
        job.state = jobs.DONE

    def running(self, task_id: str) -> Job | None:
        """The job running ``task_id`` here, if any."""
        return self.active.get(task_id)

    # -- counters (as a hook subscriber) -------------------------------------
    def task_received(self, job: Job) -> None:
        self.counts["received"] += 1

    def _closed(self, job: Job, kind: str) -> None:
        self.counts[kind] += 1
        if job.name is not None:
            self.total[job.name] += 1

    def task_succeeded(self, job: Job) -> None:
        self._closed(job, "succeeded")

    def task_failed(self, job: Job) -> None:
        self._closed(job, "failed")

    def task_retried(self, job: Job) -> None:
        self._closed(job, "retried")

    def task_rejected(self, job: Job) -> None:
        self._closed(job, "rejected")

    def task_ignored(self, job: Job) -> None:
        self._closed(job, "ignored")

    def task_revoked(self, job: Job) -> None:
        self._closed(job, "revoked")

    def task_expired(self, job: Job) -> None:
        self._closed(job, "expired")

    def task_cancelled(self, job: Job) -> None:
        self._closed(job, "cancelled")

    def task_dead_lettered(self, job: Job, reason: str) -> None:
        self.counts["dead_lettered"] += 1

    def snapshot(self) -> dict[str, Any]:
        """Counts of what is held now and what has happened (for stats and health)."""
        return {
            "uptime": time.time() - self.started_at,
            "active": len(self.active),
            "reserved": len(self.reserved),
            "scheduled": len(self.scheduled),
            "revoked": len(self.revoked.ids()),
            "total": dict(self.total),
            "counts": dict(self.counts),
        }
