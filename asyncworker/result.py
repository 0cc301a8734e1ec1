"""``AsyncResult``: wait for a task's outcome from the producer side."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any

from . import states

if TYPE_CHECKING:
    from .app import App


def exception_from_meta(meta: Any) -> BaseException:
    """Rebuild an exception from Celery's meta dict, never importing anything.

    Like Celery, only a class from an already imported module is used, and only
    if it is an exception class; otherwise a stand-in class of the same name.
    """
    if not isinstance(meta, dict) or "exc_type" not in meta:
        return Exception(meta)
    name, module = str(meta["exc_type"]), meta.get("exc_module")
    cls: Any = sys.modules.get(module) if isinstance(module, str) else None
    for part in name.split("."):
        cls = getattr(cls, part, None) if cls is not None else None
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = type(name.rsplit(".", 1)[-1], (Exception,), {"__module__": str(module)})
    message = meta.get("exc_message", ())
    try:
        exc: BaseException = cls(*message) if isinstance(message, (list, tuple)) else cls(message)
        return exc
    except Exception:
        return Exception(f"{name}({message!r})")


class TaskTimeoutError(TimeoutError):
    """``AsyncResult.get`` waited longer than its timeout."""


class AsyncResult:
    """A handle on a task's result in the app's result backend."""

    def __init__(self, task_id: str, app: App) -> None:
        self.id = task_id
        self.app = app

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    async def state(self) -> str:
        """The stored state (PENDING when nothing is stored)."""
        stored = await (await self.app.get_backend()).get(self.id)
        return states.PENDING if stored is None else stored.state

    async def get(self, timeout: float | None = None, interval: float = 0.5,
                  propagate: bool = True) -> Any:
        """Wait until the task is ready; return its value or raise its exception."""
        backend = await self.app.get_backend()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            stored = await backend.get(self.id)
            if stored is not None and stored.state in states.READY_STATES:
                if stored.state in states.PROPAGATE_STATES:
                    exc = exception_from_meta(stored.result)
                    if propagate:
                        raise exc
                    return exc
                return stored.result
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskTimeoutError(f"task {self.id} not ready after {timeout}s")
            await asyncio.sleep(interval)
