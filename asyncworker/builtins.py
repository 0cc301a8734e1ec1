"""Celery's built-in tasks, which Celery clients and canvas primitives may send."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from . import states
from .canvas import CHORD_UNLOCK
from .task import Task

if TYPE_CHECKING:
    from .app import App


async def _call_local(app: App, sig: dict[str, Any], args: list[Any]) -> Any:
    """Call a registered task's function directly, as Celery's map/starmap do."""
    task = app.tasks[sig["task"]]
    if task.is_async:
        return await task.run(*args)
    return await asyncio.to_thread(task.run, *args)


def register_builtins(app: App) -> None:
    """Register ``celery.*`` builtins on ``app``."""

    @app.task(name=CHORD_UNLOCK, bind=True, max_retries=None, ignore_result=True,
              default_retry_delay=1.0)
    async def chord_unlock(self: Task, group_id: str, callback: dict[str, Any],
                           interval: float | None = None, max_retries: int | None = None,
                           result: list[Any] | None = None, **_: Any) -> None:
        """Database backends: poll the header results until all are ready, then
        call the body (or fail it with ChordError)."""
        ids = [item[0][0] for item in result or ()]
        backend = await self.app.get_backend()
        stored = [await backend.get(task_id) for task_id in ids]
        if not all(s is not None and s.state in states.READY_STATES for s in stored):
            raise self.retry(countdown=interval or 1.0, max_retries=max_retries)
        await self.app.canvas.finish_chord(
            callback, [(s.task_id, s.state, s.result) for s in stored if s is not None])

    @app.task(name="celery.accumulate")
    def accumulate(*args: Any, index: int | None = None) -> Any:
        """Return the arguments (or the one at ``index``)."""
        return args[index] if index is not None else args

    @app.task(name="celery.map", bind=True)
    async def xmap(self: Task, task: dict[str, Any], it: list[Any]) -> list[Any]:
        """Run ``task`` on each item, here."""
        return [await _call_local(self.app, task, [item]) for item in it]

    @app.task(name="celery.starmap", bind=True)
    async def xstarmap(self: Task, task: dict[str, Any], it: list[Any]) -> list[Any]:
        """Run ``task`` on each argument list, here."""
        return [await _call_local(self.app, task, list(item)) for item in it]

    @app.task(name="celery.chunks", bind=True)
    async def chunks(self: Task, task: dict[str, Any], it: list[Any], n: int) -> None:
        """Split ``it`` into parts of ``n`` and publish one ``celery.starmap`` per part."""
        items = list(it)
        parts = [{"task": "celery.starmap", "args": [task, items[i:i + n]], "kwargs": {},
                  "options": {}} for i in range(0, len(items), n)]
        await self.app.canvas.apply({"subtask_type": "group", "kwargs": {"tasks": parts},
                                     "options": {}})

    @app.task(name="celery.group", bind=True)
    async def group(self: Task, tasks: list[dict[str, Any]], result: Any = None,
                    group_id: str | None = None, partial_args: list[Any] | None = None,
                    add_to_parent: bool = True) -> str:
        """Publish the tasks of a group."""
        return await self.app.canvas.apply(
            {"subtask_type": "group", "kwargs": {"tasks": tasks},
             "options": {"task_id": group_id}}, partial_args or ())

    @app.task(name="celery.chain")
    def chain(*args: Any, **kwargs: Any) -> None:
        """Not a real task, as in Celery."""
        raise NotImplementedError("chain is not a real task")

    @app.task(name="celery.chord", bind=True)
    async def chord(self: Task, header: Any, body: dict[str, Any],
                    partial_args: list[Any] | None = None, interval: float | None = None,
                    countdown: float = 1, max_retries: int | None = None,
                    eager: bool = False, **kwargs: Any) -> str:
        """Apply a chord sent as a task."""
        return await self.app.canvas.apply(
            {"subtask_type": "chord", "kwargs": {"header": header, "body": body},
             "options": {}}, partial_args or ())

    @app.task(name="celery.backend_cleanup", bind=True)
    async def backend_cleanup(self: Task) -> int:
        """Delete expired results."""
        backend = await self.app.get_backend()
        return await backend.cleanup()
