"""A task that kills its own worker process, and ordinary tasks to run beside it.

Settings come from ASYNCWORKER_* variables set by the tests.
"""

from __future__ import annotations

import asyncio
import os
import signal

from asyncworker import App

app = App("poison")


@app.task(name="poison.kill", acks_late=True)
async def kill() -> None:
    # Let the tasks around it start first, so that they die with it.
    await asyncio.sleep(0.1)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="poison.work", acks_late=True)
async def work(i: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return i
