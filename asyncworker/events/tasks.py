"""Task events from the worker's hooks, with the fields Celery's worker sends.

``TaskEvents`` is a hook subscriber: each closing hook becomes the matching
event (``task-succeeded``, ``task-failed``, ``task-retried``,
``task-revoked``, ``task-rejected``), plus ``task-received`` and
``task-started``. It only reads the job (its request and ``outcome``) and
queues the event; when task events are off each hook returns at once.
Reprs (args, result, exception) are cut at 1,024 characters, Celery's limit.
``task_ignored`` and ``task_cancelled`` send nothing: a cancelled task's
message goes back to the broker and runs again, with events of its own.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from ..hooks import WorkerHooks
from ..message import safe_repr
from .dispatcher import EventDispatcher

if TYPE_CHECKING:
    from ..worker.job import Job


class TaskEvents(WorkerHooks):
    """Turns task hooks into Celery's task events while ``enabled``."""

    def __init__(self, dispatcher: EventDispatcher, enabled: bool = False) -> None:
        self.dispatcher = dispatcher
        self.enabled = enabled

    def task_received(self, job: Job) -> None:
        if not self.enabled:
            return
        request = job.request
        assert request is not None
        headers = request.headers
        argsrepr = headers.get("argsrepr")
        kwargsrepr = headers.get("kwargsrepr")
        self.dispatcher.send(
            "task-received", uuid=request.id, name=request.task,
            # The producer's reprs (Celery's clients send them), else our own.
            args=argsrepr if isinstance(argsrepr, str) else safe_repr(request.args),
            kwargs=kwargsrepr if isinstance(kwargsrepr, str) else safe_repr(request.kwargs),
            root_id=request.root_id, parent_id=request.parent_id, retries=request.retries,
            eta=request.eta.isoformat() if request.eta else None,
            expires=request.expires.isoformat() if request.expires else None)

    def task_started(self, job: Job) -> None:
        if self.enabled:
            self.dispatcher.send("task-started", uuid=job.id)

    def task_succeeded(self, job: Job) -> None:
        if self.enabled:
            outcome = job.outcome
            value = outcome.value if outcome is not None else None
            self.dispatcher.send("task-succeeded", uuid=job.id, result=safe_repr(value),
                                 runtime=job.runtime)

    def _failure(self, event_type: str, job: Job) -> None:
        outcome = job.outcome
        exc = outcome.exc if outcome is not None else None
        self.dispatcher.send(event_type, uuid=job.id, exception=safe_repr(exc),
                             traceback=(outcome.traceback if outcome is not None else None) or "")

    def task_failed(self, job: Job) -> None:
        if self.enabled:
            self._failure("task-failed", job)

    def task_retried(self, job: Job) -> None:
        if self.enabled:
            self._failure("task-retried", job)

    def task_revoked(self, job: Job) -> None:
        if self.enabled:
            terminated = job.outcome is not None and job.outcome.reason == "terminated"
            # A terminate cancels the coroutine; SIGTERM is the signal Celery reports
            # by default for it.
            self.dispatcher.send("task-revoked", uuid=job.id, terminated=terminated,
                                 signum=int(signal.SIGTERM) if terminated else None,
                                 expired=False)

    def task_expired(self, job: Job) -> None:
        if self.enabled:
            self.dispatcher.send("task-revoked", uuid=job.id, terminated=False, signum=None,
                                 expired=True)

    def task_rejected(self, job: Job) -> None:
        if self.enabled and job.id is not None:
            outcome = job.outcome
            self.dispatcher.send("task-rejected", uuid=job.id,
                                 requeue=bool(outcome is not None and outcome.requeue))
