"""Named points in a task's life where observers plug in.

Hooks are synchronous and must not block: anything slow (an event to publish,
a metric to push) is queued by the hook. They observe; changing what happens to
a task is the job of middleware and outcome steps.

Every job that reaches ``task_received`` gets exactly one closing hook:
``task_succeeded``, ``task_failed``, ``task_retried``, ``task_rejected``,
``task_ignored``, ``task_revoked``, ``task_expired`` or ``task_cancelled``.
``job.outcome`` says how it ended (the value, the exception, the reason), and
a message that could not be decoded gets ``task_rejected`` with
``job.message`` None. Register hooks with ``app.add_hooks(...)``, a plugin or
the ``worker_plugins`` setting.

The scheduler (``beat``) reports on the same subscribers: ``task_sent`` for
every message it publishes, and ``beat_fired``, ``beat_missed`` and
``beat_took_over`` for its ticks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .logging import get_logger

if TYPE_CHECKING:
    from .beat.entries import Tick
    from .protocol import OutgoingMessage
    from .worker.job import Job

#: The points a job closes on (exactly one fires per received job).
CLOSING = ("task_succeeded", "task_failed", "task_retried", "task_rejected", "task_ignored",
           "task_revoked", "task_expired", "task_cancelled")


class WorkerHooks:
    """No-op base: override the points you need."""

    def worker_ready(self, worker: Any) -> None:
        """The worker is consuming."""

    def worker_stopping(self, worker: Any, cold: bool) -> None:
        """A warm (or cold) shutdown began."""

    def task_sent(self, message: OutgoingMessage, exchange: str, routing_key: str) -> None:
        """This process published a task message (producer side)."""

    def task_received(self, job: Job) -> None:
        """A valid task message arrived (``job.request`` is set)."""

    def task_started(self, job: Job) -> None:
        """The task body is about to run."""

    def task_succeeded(self, job: Job) -> None:
        """The task returned and its result is stored (``job.outcome.value``)."""

    def task_failed(self, job: Job) -> None:
        """The task raised (``job.outcome.exc``), or its result could not be stored."""

    def task_retried(self, job: Job) -> None:
        """A retry was published (``job.outcome.retry.when``)."""

    def task_rejected(self, job: Job) -> None:
        """The message was rejected: bad input, unknown task, or ``Reject`` raised."""

    def task_ignored(self, job: Job) -> None:
        """``Ignore`` was raised, or a redelivered duplicate was dropped."""

    def task_revoked(self, job: Job) -> None:
        """Revoked before it ran, or terminated while running (``outcome.reason``)."""

    def task_expired(self, job: Job) -> None:
        """Its ``expires`` passed before it could start."""

    def task_cancelled(self, job: Job) -> None:
        """Interrupted (cold shutdown, lost channel); the message goes back to the broker."""

    def task_dead_lettered(self, job: Job, reason: str) -> None:
        """The message was kept in a dead-letter queue (not a closing hook)."""

    def beat_fired(self, tick: Tick, lag: float) -> None:
        """The scheduler published ``tick`` (``lag``: seconds after its scheduled time)."""

    def beat_missed(self, tick: Tick, missed: int) -> None:
        """``missed`` ticks older than the misfire grace time were coalesced into ``tick``."""

    def beat_took_over(self, tick: Tick, previous: str) -> None:
        """The scheduler took over ``tick``, claimed by ``previous`` but never published."""

    def task_worker_lost(self, job: Job, deaths: int, action: str) -> None:
        """A redelivered late-ack task was running when its worker died (``deaths`` so
        far): ``action`` is ``isolate`` (run again alone), ``fail`` (WorkerLostError)
        or ``poison`` (dead-lettered). Not a closing hook."""

    def task_parked(self, job: Job, delay_queue: str, returns_at: float) -> None:
        """``job``'s message, due past the hold limit, was parked in ``delay_queue``
        and has left this worker; the broker brings it back at ``returns_at`` (a
        Unix time). Not a closing hook: it is received again on its return."""


_POINTS = [name for name in vars(WorkerHooks) if not name.startswith("_")]


class HookSet(WorkerHooks):
    """Fans each point out to the hooks that override it; a failing hook is logged.

    Only overridden methods are called, so an unused point costs one empty loop.
    """

    def __init__(self, hooks: list[WorkerHooks] | None = None) -> None:
        self.hooks: list[WorkerHooks] = []
        self._log = get_logger("hooks")
        self._calls: dict[str, list[Any]] = {name: [] for name in _POINTS}
        for hook in hooks or []:
            self.add(hook)

    def add(self, hook: WorkerHooks) -> None:
        """Subscribe another hook object."""
        self.hooks.append(hook)
        for name in _POINTS:
            if getattr(type(hook), name) is not getattr(WorkerHooks, name):
                self._calls[name].append(getattr(hook, name))

    def wants(self, name: str) -> bool:
        """Whether a hook listens at point ``name`` (to skip building its arguments)."""
        return bool(self._calls[name])

    def _call(self, name: str, *args: Any) -> None:
        for fn in self._calls[name]:
            try:
                fn(*args)
            except Exception as exc:
                self._log.error("hook failed", hook=type(fn.__self__).__name__, point=name,
                                error=repr(exc))

    def worker_ready(self, worker: Any) -> None:
        self._call("worker_ready", worker)

    def worker_stopping(self, worker: Any, cold: bool) -> None:
        self._call("worker_stopping", worker, cold)

    def task_sent(self, message: OutgoingMessage, exchange: str, routing_key: str) -> None:
        self._call("task_sent", message, exchange, routing_key)

    def task_received(self, job: Job) -> None:
        self._call("task_received", job)

    def task_started(self, job: Job) -> None:
        self._call("task_started", job)

    def task_succeeded(self, job: Job) -> None:
        self._call("task_succeeded", job)

    def task_failed(self, job: Job) -> None:
        self._call("task_failed", job)

    def task_retried(self, job: Job) -> None:
        self._call("task_retried", job)

    def task_rejected(self, job: Job) -> None:
        self._call("task_rejected", job)

    def task_ignored(self, job: Job) -> None:
        self._call("task_ignored", job)

    def task_revoked(self, job: Job) -> None:
        self._call("task_revoked", job)

    def task_expired(self, job: Job) -> None:
        self._call("task_expired", job)

    def task_cancelled(self, job: Job) -> None:
        self._call("task_cancelled", job)

    def task_dead_lettered(self, job: Job, reason: str) -> None:
        self._call("task_dead_lettered", job, reason)

    def beat_fired(self, tick: Tick, lag: float) -> None:
        self._call("beat_fired", tick, lag)

    def beat_missed(self, tick: Tick, missed: int) -> None:
        self._call("beat_missed", tick, missed)

    def beat_took_over(self, tick: Tick, previous: str) -> None:
        self._call("beat_took_over", tick, previous)

    def task_worker_lost(self, job: Job, deaths: int, action: str) -> None:
        self._call("task_worker_lost", job, deaths, action)

    def task_parked(self, job: Job, delay_queue: str, returns_at: float) -> None:
        self._call("task_parked", job, delay_queue, returns_at)


class LogHooks(WorkerHooks):
    """One structured log line per task event."""

    def __init__(self) -> None:
        self.log = get_logger("task")

    def task_received(self, job: Job) -> None:
        request = job.request
        assert request is not None
        self.log.info("task received", task_id=request.id, task=request.task,
                      eta=request.eta.isoformat() if request.eta else None)

    def task_succeeded(self, job: Job) -> None:
        self.log.info("task succeeded", task_id=job.id, task=job.name,
                      runtime=round(job.runtime, 6))

    def task_failed(self, job: Job) -> None:
        exc = job.outcome.exc if job.outcome is not None else None
        self.log.warning("task failed", task_id=job.id, task=job.name,
                         exc_type=type(exc).__name__, error=str(exc),
                         runtime=round(job.runtime, 6))

    def task_retried(self, job: Job) -> None:
        outcome = job.outcome
        assert outcome is not None and outcome.retry is not None and job.request is not None
        exc = outcome.exc
        self.log.info("task retry scheduled", task_id=job.id, task=job.name,
                      retries=job.request.retries + 1, eta=str(outcome.retry.when),
                      exc_type=type(exc).__name__, error=str(exc))

    def task_rejected(self, job: Job) -> None:
        outcome = job.outcome
        self.log.warning("message rejected", task_id=job.id, task=job.name, queue=job.queue,
                         reason=outcome.reason if outcome else None,
                         requeue=outcome.requeue if outcome else False)

    def task_revoked(self, job: Job) -> None:
        self.log.info("task revoked", task_id=job.id, task=job.name,
                      reason=job.outcome.reason if job.outcome else None)

    def task_expired(self, job: Job) -> None:
        self.log.info("task revoked", task_id=job.id, task=job.name, reason="expired")


class _WarningLogHooks(LogHooks):
    """LogHooks without its INFO lines, so that HookSet skips those points entirely."""

    task_received = WorkerHooks.task_received
    task_succeeded = WorkerHooks.task_succeeded
    task_retried = WorkerHooks.task_retried
    task_revoked = WorkerHooks.task_revoked
    task_expired = WorkerHooks.task_expired


def log_hooks(level: str) -> LogHooks:
    """The task log lines for ``level``: above INFO, per-task INFO lines cost nothing."""
    if logging.getLevelName(level.upper()) in (logging.DEBUG, logging.INFO):
        return LogHooks()
    return _WarningLogHooks()
