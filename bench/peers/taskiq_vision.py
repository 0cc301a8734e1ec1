"""taskiq's ``vision`` task: its broker with the pipeline's clients opened at worker start."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState

from asyncworker.contrib.vision import pipeline

from . import vision as clients
from .taskiq_app import broker

_stack = contextlib.AsyncExitStack()


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def open_clients(state: TaskiqState) -> None:
    """One S3 and one model-API client for every task of this worker process."""
    state.vision = await _stack.enter_async_context(clients.clients())


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def close_clients(state: TaskiqState) -> None:
    """Close them when the worker stops."""
    await _stack.aclose()


#: taskiq injects the task's context through a default argument.
CONTEXT = TaskiqDepends()


@broker.task(task_name="bench.vision")
async def vision(s3_path: str, context: Context = CONTEXT) -> dict[str, Any]:
    """S3 get, one model call, S3 put; with the finish time."""
    analysis = await pipeline.analyse_image(context.state.vision, s3_path,
                                            f"analysis/{context.message.task_id}.json")
    return {"finished_at": time.time(), "analysis": analysis}
