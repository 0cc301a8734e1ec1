"""Exceptions raised by and inside asyncworker.

Several of them travel to Celery clients through the result backend. A client
rebuilds a stored exception by importing ``exc_module`` and looking up
``exc_type``, so each such class names the Celery module its counterpart lives
in (``celery_module``); the client then raises Celery's own class.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AsyncWorkerError(Exception):
    """Base class for asyncworker's own errors."""


class ImproperlyConfigured(AsyncWorkerError):
    """A setting is missing or has an invalid value."""


class ContentDisallowed(AsyncWorkerError):
    """A message's content type is not in ``accept_content``."""


class InvalidTaskError(AsyncWorkerError):
    """A message cannot be turned into a task request (bad headers or body)."""


class CeleryCompatibleError(Exception):
    """An exception a Celery client knows by another module name."""

    celery_module: ClassVar[str] = "celery.exceptions"


class NotRegistered(CeleryCompatibleError, KeyError):
    """The task name in a message is not registered with this worker."""


class TaskRevokedError(CeleryCompatibleError):
    """The task was revoked or expired before it ran."""


class MaxRetriesExceededError(CeleryCompatibleError):
    """The task asked to be retried more often than ``max_retries`` allows."""


class ChordError(CeleryCompatibleError):
    """A member of a chord's header failed."""


class TimeLimitExceeded(CeleryCompatibleError):
    """The task ran past its hard time limit and was stopped."""

    celery_module = "billiard.exceptions"


class SoftTimeLimitExceeded(CeleryCompatibleError):
    """Raised inside a task when its soft time limit has passed."""

    celery_module = "billiard.exceptions"


class WorkerLostError(CeleryCompatibleError):
    """The worker stopped while the task was running."""

    celery_module = "billiard.exceptions"


class Retry(CeleryCompatibleError):
    """Raised by a task to ask for a later retry (``self.retry()``)."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: Any = None,
        **sig: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        # args / kwargs / options for the new message (from Task.retry).
        self.sig = sig
        super().__init__(message, exc, when)

    def __str__(self) -> str:
        reason = f": {self.exc!r}" if self.exc is not None else ""
        return f"Retry at {self.when}{reason}"


class Reject(CeleryCompatibleError):
    """Raised by a task to reject its message, optionally requeueing it."""

    def __init__(self, reason: object = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class Ignore(CeleryCompatibleError):
    """Raised by a task to end it without storing any state."""


def celery_module_of(exc_type: type[BaseException]) -> str:
    """The module name a Celery client should import to rebuild ``exc_type``."""
    module = getattr(exc_type, "celery_module", None)
    # Only our own classes map to Celery's modules; user subclasses keep theirs.
    if isinstance(module, str) and exc_type.__module__ == __name__:
        return module
    return exc_type.__module__
