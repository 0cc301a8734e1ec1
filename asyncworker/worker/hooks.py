"""Named points in a task's life where features plug in.

Logging is one subscriber; events for Flower, metrics and remote control attach
the same way, by subclassing ``WorkerHooks`` and overriding what they need.
Hooks are synchronous and must not block: anything slow is queued by the hook.
"""

from __future__ import annotations

from typing import Any

from ..logging import get_logger
from ..task import Request


class WorkerHooks:
    """No-op base: override the points you need."""

    def worker_ready(self, worker: Any) -> None:
        """The worker is consuming."""

    def worker_stopping(self, worker: Any, cold: bool) -> None:
        """A warm (or cold) shutdown began."""

    def task_received(self, request: Request) -> None:
        """A valid task message arrived."""

    def task_started(self, request: Request) -> None:
        """The task body is about to run."""

    def task_succeeded(self, request: Request, result: Any, runtime: float) -> None:
        """The task returned (its result is stored)."""

    def task_failed(self, request: Request | None, exc: BaseException, runtime: float) -> None:
        """The task raised, or the message named an unknown task."""

    def task_retried(self, request: Request, exc: BaseException, when: Any) -> None:
        """A retry was published (the task will run again at ``when``)."""

    def task_rejected(self, task_id: str | None, reason: str, requeue: bool) -> None:
        """The message was rejected (bad input or the task raised Reject)."""

    def task_revoked(self, request: Request, reason: str) -> None:
        """The task will not run (expired)."""


class HookSet(WorkerHooks):
    """Fans each call out to every registered hook; a failing hook is logged, not fatal."""

    def __init__(self, hooks: list[WorkerHooks] | None = None) -> None:
        self.hooks: list[WorkerHooks] = list(hooks or [])
        self._log = get_logger("hooks")

    def add(self, hook: WorkerHooks) -> None:
        """Subscribe another hook object."""
        self.hooks.append(hook)

    def _call(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, name)(*args)
            except Exception as exc:
                self._log.error("hook failed", hook=type(hook).__name__, point=name,
                                error=repr(exc))

    def worker_ready(self, worker: Any) -> None:
        self._call("worker_ready", worker)

    def worker_stopping(self, worker: Any, cold: bool) -> None:
        self._call("worker_stopping", worker, cold)

    def task_received(self, request: Request) -> None:
        self._call("task_received", request)

    def task_started(self, request: Request) -> None:
        self._call("task_started", request)

    def task_succeeded(self, request: Request, result: Any, runtime: float) -> None:
        self._call("task_succeeded", request, result, runtime)

    def task_failed(self, request: Request | None, exc: BaseException,
                    runtime: float) -> None:
        self._call("task_failed", request, exc, runtime)

    def task_retried(self, request: Request, exc: BaseException, when: Any) -> None:
        self._call("task_retried", request, exc, when)

    def task_rejected(self, task_id: str | None, reason: str, requeue: bool) -> None:
        self._call("task_rejected", task_id, reason, requeue)

    def task_revoked(self, request: Request, reason: str) -> None:
        self._call("task_revoked", request, reason)


class LogHooks(WorkerHooks):
    """One structured log line per task event."""

    def __init__(self) -> None:
        self.log = get_logger("task")

    def task_received(self, request: Request) -> None:
        self.log.info("task received", task_id=request.id, task=request.task,
                      eta=request.eta.isoformat() if request.eta else None)

    def task_succeeded(self, request: Request, result: Any, runtime: float) -> None:
        self.log.info("task succeeded", task_id=request.id, task=request.task,
                      runtime=round(runtime, 6))

    def task_failed(self, request: Request | None, exc: BaseException,
                    runtime: float) -> None:
        self.log.warning("task failed", task_id=request.id if request else None,
                         task=request.task if request else None,
                         exc_type=type(exc).__name__, error=str(exc), runtime=round(runtime, 6))

    def task_retried(self, request: Request, exc: BaseException, when: Any) -> None:
        self.log.info("task retry scheduled", task_id=request.id, task=request.task,
                      retries=request.retries + 1, eta=str(when), exc_type=type(exc).__name__,
                      error=str(exc))

    def task_rejected(self, task_id: str | None, reason: str, requeue: bool) -> None:
        self.log.warning("message rejected", task_id=task_id, reason=reason, requeue=requeue)

    def task_revoked(self, request: Request, reason: str) -> None:
        self.log.info("task revoked", task_id=request.id, task=request.task, reason=reason)
