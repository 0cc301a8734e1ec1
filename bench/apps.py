"""The benchmark's tasks as asyncworker runs them (the Celery twins are in celery_app.py)."""

from __future__ import annotations

import asyncio

from asyncworker import App

app = App("bench")

#: How long a ``sleep`` task waits: an I/O wait with nothing else to do.
SLEEP_SECONDS = 0.1


@app.task(name="bench.noop")
async def noop() -> None:
    """Nothing: what is measured is the worker's own cost per task."""


@app.task(name="bench.sleep")
async def sleep() -> None:
    """Wait 100 ms without blocking the loop."""
    await asyncio.sleep(SLEEP_SECONDS)
