"""The benchmark's tasks as asyncworker runs them (the Celery twins are in celery_app.py)."""

from __future__ import annotations

import asyncio

from asyncworker import App

from . import SLEEP_SECONDS

app = App("bench")


@app.task(name="bench.noop")
async def noop() -> None:
    """Nothing: what is measured is the worker's own cost per task."""


@app.task(name="bench.sleep")
async def sleep() -> None:
    """Wait 100 ms without blocking the loop."""
    await asyncio.sleep(SLEEP_SECONDS)
