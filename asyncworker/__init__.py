"""asyncworker: an asyncio-native, drop-in replacement for the Celery worker."""

from .app import App
from .exceptions import (
    Ignore,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from .result import AsyncResult
from .task import Request, Task

__all__ = [
    "App",
    "AsyncResult",
    "Ignore",
    "ImproperlyConfigured",
    "MaxRetriesExceededError",
    "NotRegistered",
    "Reject",
    "Request",
    "Retry",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskRevokedError",
    "TimeLimitExceeded",
]

__version__ = "0.1.0"
